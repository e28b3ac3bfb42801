"""The degradation vocabulary: one table used by the PIP networks, the synthesis, the datasets; layers by concern."""

from __future__ import annotations

import pytest
import torch

import allinone_ir.layers as layers
from allinone_ir.data import DEGRADATION_LABELS as DATA_LABELS
from allinone_ir.data import DEGRADATIONS, synthesize
from allinone_ir.data.datasets import _task_degradation
from allinone_ir.degradation_types import (
    DEFAULT_DEGRADATIONS,
    DEGRADATION_LABELS,
    DEGRADATION_TABLE,
    Degradation,
    default_names,
    parse_degradation,
    resolve_degradation_weights,
)
from allinone_ir.layers.attention import CrossChannelAttention, top_m_channel_attention
from allinone_ir.models.pip import PIPBlock


class TestTable:
    def test_labels_keep_their_meaning(self) -> None:
        # PIP's five classes as the paper and its official code number them, then snow: checkpoints,
        # the shipped pip_five_task.yaml and promptir_three_task.yaml rely on these numbers
        assert DEGRADATION_LABELS == {"noise": 0, "rain": 1, "haze": 2, "blur": 3, "lowlight": 4, "snow": 5}
        assert DEFAULT_DEGRADATIONS == ("noise", "rain", "haze", "blur", "lowlight")
        assert [d.label for d in DEGRADATION_TABLE] == list(range(len(DEGRADATION_TABLE)))

    def test_names_and_aliases_are_unique(self) -> None:
        keys = [k for d in DEGRADATION_TABLE for k in (d.name, *d.aliases)]
        assert len(keys) == len(set(keys))
        assert all(d.name == d.name.lower() and d.name.isalpha() for d in DEGRADATION_TABLE)
        assert DEGRADATION_TABLE[5] == Degradation(5, "snow", ("desnow",))

    def test_every_user_reads_the_same_table(self) -> None:
        assert DATA_LABELS is DEGRADATION_LABELS  # data synthesis and datasets
        assert set(DEGRADATIONS) == set(DEGRADATION_LABELS)  # one synthesiser per degradation
        assert PIPBlock(8, 8, 4, p2f_heads=2).prompt.num_degradations == len(DEFAULT_DEGRADATIONS)
        # the layers take numbers; names are read here only
        for name in ("DEFAULT_DEGRADATIONS", "resolve_degradation_weights", "DegradationSpec"):
            assert not hasattr(layers, name)

    def test_promptir_layout_tasks_map_to_the_pip_labels(self) -> None:
        tasks = ["denoise", "derain", "dehaze", "deblur", "lowlight"]  # the shipped pip_five_task.yaml
        assert [DEGRADATION_LABELS[_task_degradation(t)] for t in tasks] == [0, 1, 2, 3, 4]
        assert _task_degradation("my_own_task") == "my_own_task"  # a user's layout entry keeps its name


class TestLookups:
    def test_canonical_names_and_default_names(self) -> None:
        names = ("Low-Light", "low light", "ENHANCE", "derain", "de-snow")
        assert [parse_degradation(n)[0] for n in names] == [
            "lowlight",
            "lowlight",
            "lowlight",
            "rain",
            "snow",
        ]
        assert default_names(5) == DEFAULT_DEGRADATIONS
        assert default_names(8) == (*DEGRADATION_LABELS, "degradation6", "degradation7")
        assert default_names(0) == ()

    def test_errors_name_the_known_degradations(self) -> None:
        with pytest.raises(ValueError, match=r"unknown degradation name 'rian'.*did you mean 'rain'"):
            parse_degradation("rian")
        with pytest.raises(ValueError, match=r"'fire'; the known degradations are \['noise', .*'snow'\];"):
            parse_degradation("fire")
        with pytest.raises(ValueError, match="count"):
            default_names(-1)

    def test_network_names_first_then_aliases(self) -> None:
        # a network's own names win; the vocabulary's aliases reach them otherwise
        names = ("rain", "snow")
        assert resolve_degradation_weights("desnow", batch_size=1, names=names).tolist() == [[0.0, 1.0]]
        assert resolve_degradation_weights(["Rain", "snow+derain"], batch_size=2, names=names).tolist() == [
            [1.0, 0.0], [0.5, 0.5],
        ]  # fmt: skip
        with pytest.raises(ValueError, match=r"'haze'; this network knows \['rain', 'snow'\]"):
            resolve_degradation_weights("haze", batch_size=1, names=names)

    def test_synthesis_accepts_the_aliases(self) -> None:
        x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        assert torch.equal(synthesize(x, "derain", rng=3), synthesize(x, "rain", rng=3))
        assert torch.equal(synthesize(x, "Low-Light", rng=3), synthesize(x, "lowlight", rng=3))
        with pytest.raises(ValueError, match="unknown degradation name 'fog'"):
            synthesize(x, "fog")


class TestLayersByConcern:
    def test_attention_functions_live_together(self) -> None:
        # the top-m attention and the cross attention are attention, next to the dense functions
        assert (
            top_m_channel_attention.__module__
            == CrossChannelAttention.__module__
            == "allinone_ir.layers.attention"
        )


class TestSpecGrammar:
    """One grammar for a degradation specification: synthesis, synthetic tasks, evaluate's groups, PIP control."""

    @pytest.mark.parametrize(
        ("spec", "parsed"),
        [("noise_15", ("noise", 15.0)), ("noise25", ("noise", 25.0)), ("Denoise-50", ("noise", 50.0)),
         ("noise 12.5", ("noise", 12.5)), ("noise", ("noise", None)), ("derain", ("rain", None)),
         ("Low light", ("lowlight", None))],
    )  # fmt: skip
    def test_parses(self, spec: str, parsed: tuple[str, float | None]) -> None:
        assert parse_degradation(spec) == parsed

    def test_refuses_with_the_reason(self) -> None:
        with pytest.raises(ValueError, match=r"'rain_15': rain takes no level; only noise_<sigma> does"):
            parse_degradation("rain_15")
        with pytest.raises(ValueError, match=r"unknown degradation name 'img'.*noise also takes a level"):
            parse_degradation("img")
        with pytest.raises(ValueError, match=r"unknown degradation name 'fog_3'"):
            parse_degradation("fog_3")

    def test_everywhere(self) -> None:
        x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        from allinone_ir.data.degradations import add_gaussian_noise

        assert torch.equal(synthesize(x, "noise_15", rng=2), add_gaussian_noise(x, 15, rng=2))  # was refused
        assert torch.equal(synthesize(x, "denoise_50", rng=2), add_gaussian_noise(x, 50, rng=2))
        with pytest.raises(ValueError, match="rain takes no level"):
            synthesize(x, "rain_15")
        w = resolve_degradation_weights("noise_25", batch_size=1, names=("rain", "noise"))
        assert w.tolist() == [[0.0, 1.0]]
        # a network's names are read through the vocabulary too: its "derain" is the data's "rain"
        assert resolve_degradation_weights("rain", batch_size=1, names=("noise", "derain")).tolist() == [
            [0.0, 1.0]
        ]
        assert resolve_degradation_weights("fog", batch_size=1, names=("fog", "rain")).tolist() == [
            [1.0, 0.0]
        ]


def test_a_negative_noise_level_is_refused() -> None:
    # "noise_-5" read the minus as a separator: Gaussian noise of sigma 5, silently
    for spec in ("noise_-5", "noise -5", "denoise--25"):
        with pytest.raises(ValueError, match="sigma"):
            parse_degradation(spec)
    assert parse_degradation("noise-5") == ("noise", 5.0)
