"""Each model family owns its knowledge: detection, checkpoint filter, fine-tuning groups, config capture.

The family of the contributor guide (``docs/architecture.md``, "Adding a network") is defined in
this file, outside the package, and goes through the library without any file of it naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from allinone_ir import create_model
from allinone_ir.hub import (
    CheckpointError,
    detect_architecture,
    from_pretrained,
    load_checkpoint,
    save_pretrained,
)
from allinone_ir.models import (
    AuxiliaryLoss,
    DegradationClassifier,
    PromptIR,
    RecordsConfig,
    RestorationModel,
    Restormer,
    _registry,
    get_model_class,
    list_architectures,
    register_architecture,
)
from allinone_ir.training.finetune import (
    PROMPTIR_STAGE2_GROUPS,
    finetune_groups,
    freeze,
    module_groups,
    unfreeze,
)

from .tiny_configs import TINY


def _define_tiny_resnet() -> type[RestorationModel]:
    """The example of the contributor guide, verbatim (defined when a test asks, registered by its fixture)."""

    class TinyResNet(RestorationModel):
        """A residual stack of 3x3 convolutions (the example family of the contributor guide).

        Args:
            channels: Image channels.
            width: Feature channels.
            depth: Convolutions in the body.

        Shape:
            - Input: :math:`(N, C, H, W)`
            - Output: :math:`(N, C, H, W)`
        """

        finetune_groups = {"body": ("blocks",), "ends": ("head", "tail")}

        def __init__(self, *, channels: int = 3, width: int = 16, depth: int = 2) -> None:
            super().__init__()
            self.in_channels = self.out_channels = channels
            self.head = nn.Conv2d(channels, width, 3, padding=1)
            self.blocks = nn.Sequential(*[nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)])
            self.tail = nn.Conv2d(width, channels, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            inp, size = self._pad_input(x)
            return self._crop(inp + self.tail(self.blocks(self.head(inp))), size)

        @classmethod
        def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
            # the official release calls the first convolution "conv_first"
            head = state_dict.get("head.weight", state_dict.get("conv_first.weight"))
            if head is None or "tail.weight" not in state_dict:
                return None
            depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
            return {"channels": int(head.shape[1]), "width": int(head.shape[0]), "depth": depth}

        @classmethod
        def filter_state_dict(cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict:
            return {k.replace("conv_first.", "head.", 1): v for k, v in state_dict.items()}

        def auxiliary_losses(self) -> list[AuxiliaryLoss]:
            def smooth(model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, Any]) -> torch.Tensor:
                return sum(p.square().mean() for p in model.blocks.parameters())

            return [AuxiliaryLoss("smooth", 1e-4, smooth)]

    return TinyResNet


@pytest.fixture
def tiny_resnet(monkeypatch: pytest.MonkeyPatch) -> type[RestorationModel]:
    """Register the guide's family for one test only (the registry is restored afterwards)."""
    monkeypatch.setattr(_registry, "_ARCHITECTURES", dict(_registry._ARCHITECTURES))
    return register_architecture(_define_tiny_resnet())


def _randomised(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return net.eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    x = torch.rand(1, 3, 19, 22)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- a family from outside


def test_third_party_family_loads_its_raw_state_dict(tiny_resnet: type[RestorationModel], tmp_path) -> None:
    net = _randomised(tiny_resnet(width=8, depth=3))
    assert "TinyResNet" in list_architectures()
    official = {
        "params": {f"module.{k.replace('head.', 'conv_first.')}": v for k, v in net.state_dict().items()}
    }
    renamed = {k.replace("head.", "conv_first."): v for k, v in net.state_dict().items()}
    assert detect_architecture(renamed) == ("TinyResNet", {"channels": 3, "width": 8, "depth": 3})
    loaded = load_checkpoint(official)  # wrapper and prefix stripped, detected, official keys renamed
    assert type(loaded) is tiny_resnet and loaded.config == {"channels": 3, "width": 8, "depth": 3}
    _same_outputs(loaded, net)
    _same_outputs(load_checkpoint(net.state_dict(), "TinyResNet"), net)
    _same_outputs(from_pretrained(save_pretrained(net, tmp_path / "m")), net)
    # its fine-tuning groups and training terms
    assert freeze(loaded) == loaded.num_parameters
    assert unfreeze(loaded, ["body"]) == module_groups(loaded)["blocks"][1]
    (term,) = loaded.auxiliary_losses()
    assert term.name == "smooth" and term.fn(loaded, {}, {}).ndim == 0


def test_built_in_families_still_detected_next_to_a_third_party_one(
    tiny_resnet: type[RestorationModel],
) -> None:
    for name in ("restormer", "promptir", "nafnet", "pip_restormer", "pip_nafnet"):
        net = create_model(name, **TINY[name])
        assert detect_architecture(net.state_dict())[0] == type(net).__name__
    with pytest.raises(CheckpointError, match=r"cannot detect.*known: .*PromptIR.*TinyResNet"):
        load_checkpoint({"foo.weight": torch.zeros(2)})


def test_several_claims_are_settled_by_the_best_key_match() -> None:
    """Restormer's reader accepts PromptIR's layout; PromptIR's own claim matches exactly and wins."""
    state = create_model("promptir", **TINY["promptir"]).state_dict()
    assert Restormer.detect(state) is not None and PromptIR.detect(state) is not None
    assert detect_architecture(state)[0] == "PromptIR"
    assert PromptIR.detect(create_model("restormer", **TINY["restormer"]).state_dict()) is None


def test_a_family_error_is_reported_when_nothing_else_claims() -> None:
    state = dict(create_model("restormer", **TINY["restormer"]).state_dict())
    state["latent.0.ffn.project_out.weight"] = torch.zeros(64, 7, 1, 1)  # no factor fits
    with pytest.raises(
        CheckpointError,
        match=r"^Restormer, PIPRestormer, PromptIR: key latent\.0\.ffn\.project_out\.weight has shape "
        r"\(64, 7, 1, 1\), which does not fit the feed-forward expansion factor 2\.66 of the other 7 blocks",
    ):
        detect_architecture(state)
    # no majority: the hidden sizes are listed
    for k in [k for k in state if k.endswith("ffn.project_out.weight")][:5]:
        state[k] = torch.zeros(state[k].shape[0], 7, 1, 1)
    with pytest.raises(CheckpointError, match=r"Restormer.*: cannot find a feed-forward expansion factor"):
        detect_architecture(state)


def test_promptir_filter_drops_unused_modules_and_gives_prompts_the_official_shape() -> None:
    net = create_model("promptir", **TINY["promptir"])
    state = {k: v for k, v in net.state_dict().items()}
    ours = {k: (v[0] if k.endswith("prompt_param") else v) for k, v in state.items()}  # (L, C, S, S)
    ours["chnl_reduce1.weight"] = torch.zeros(8, 8, 1, 1)
    out = PromptIR.filter_state_dict(ours, net)
    assert "chnl_reduce1.weight" not in out and "chnl_reduce1.weight" in ours  # a new dict
    assert out["prompt1.prompt_param"].shape == state["prompt1.prompt_param"].shape
    assert Restormer.filter_state_dict(ours, net).keys() == ours.keys()  # the default keeps everything


# --------------------------------------------------------------------------- configuration captured once


def _keyword_only(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _as_json(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


@pytest.mark.parametrize("name", [n for n in list_architectures()])
def test_config_is_the_signature_of_every_registered_network(name: str) -> None:
    cls = get_model_class(name)
    with torch.device("meta"):
        net = cls()
    assert net.config == {k: _as_json(v) for k, v in _keyword_only(cls).items()}
    assert list(net.config) == list(_keyword_only(cls))  # the order of the signature (config.json unchanged)
    assert repr(net)


@pytest.mark.parametrize("name", sorted(TINY))
def test_config_records_the_given_arguments(name: str) -> None:
    net = create_model(name, **TINY[name])
    for key, value in TINY[name].items():
        assert net.config[key] == _as_json(value)
    assert get_model_class(type(net).__name__)(**net.config).config == net.config


def test_subclasses_record_their_own_arguments() -> None:
    class Plain(Restormer):  # no constructor of its own: the parent's arguments
        pass

    net = Plain(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    assert net.config["dim"] == 8 and net.config["num_blocks"] == [1, 1, 1, 1] and "dim=8" in repr(net)

    class Fixed(Restormer):  # its own keyword-only arguments, some passed on
        def __init__(self, *, width: int = 8, blocks: Sequence[int] = (1, 1, 1, 1)) -> None:
            super().__init__(dim=width, num_blocks=blocks, num_refinement_blocks=1)

    assert Fixed(blocks=(2, 1, 1, 1)).config == {"width": 8, "blocks": [2, 1, 1, 1]}

    class Forwarding(Restormer):  # passes **kwargs on: the parent's record is merged in
        def __init__(self, *, scale: float = 1.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = scale

    net = Forwarding(scale=2.0, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    assert net.config["scale"] == 2.0 and net.config["dim"] == 8 and net.config["heads"] == [1, 2, 4, 8]
    assert type(net)(**net.config).config == net.config

    class Mixed(RecordsConfig, nn.Module):
        def __init__(self, backbone: nn.Module, *, skips: Mapping[str, int]) -> None:
            super().__init__()
            self.backbone = backbone

    assert Mixed(nn.Identity(), skips={"a": 1}).config == {"skips": {"a": 1}}  # positional: not configuration
    with pytest.raises(
        TypeError, match=r"^Fixed does not take the argument 'widht' \(did you mean 'width'\?\)"
    ):
        Fixed(width=8, widht=3)  # type: ignore[call-arg]


def test_classifier_records_its_config() -> None:
    clf = DegradationClassifier(num_degradations=3, widths=(4, 8))
    assert clf.config == {"in_channels": 3, "num_degradations": 3, "widths": [4, 8], "blocks_per_stage": 1}


# --------------------------------------------------------------------------- fine-tuning groups


@pytest.mark.parametrize("name", ["restormer", "promptir", "nafnet", "pip_restormer", "pip_nafnet"])
def test_finetune_groups_of_every_family(name: str) -> None:
    net = create_model(name, **TINY[name])
    groups = finetune_groups(net)
    assert {"encoder", "decoder"} <= set(groups)
    assert not set(groups) & set(module_groups(net))  # group names never shadow a module
    for group in groups:
        freeze(net)
        assert unfreeze(net, [group]) > 0
    freeze(net)
    classifier = ["classifier"] if "classifier" in dict(net.named_children()) else []
    assert unfreeze(net, [*groups, *classifier]) == net.num_parameters  # the groups cover the network


def test_promptir_stage2_group() -> None:
    net = create_model("promptir", **TINY["promptir"])
    assert finetune_groups(net)["stage2"] == PROMPTIR_STAGE2_GROUPS
    freeze(net)
    a = unfreeze(net, ["stage2"])
    freeze(net)
    assert unfreeze(net, list(PROMPTIR_STAGE2_GROUPS)) == a
    with pytest.raises(ValueError, match=r"named groups \['decoder', 'encoder', 'prompts', 'stage2'\]"):
        unfreeze(net, ["stage3"])
    assert finetune_groups(nn.Linear(2, 2)) == {}


def test_pipunet_records_its_arguments_not_its_backbone() -> None:
    from allinone_ir.models import PIPUNet

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Conv2d(3, 8, 3, padding=1)
            self.skip = nn.Identity()
            self.out = nn.Conv2d(8, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.out(self.skip(self.enc(x)))

    net = PIPUNet(Backbone(), skips={"skip": 8}, prompt_sizes=4, p2f_heads=2, classifier_widths=(4,))
    assert "backbone" not in net.config and net.config["skips"] == {"skip": 8}
    assert net.config["prompt_sizes"] == 4 and net.config["classifier_widths"] == [4]
    again = PIPUNet(Backbone(), **net.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    freeze(net)
    assert unfreeze(net, ["prompts"]) == module_groups(net)["pips"][1]


def test_a_greedy_claim_that_does_not_build_loses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_ARCHITECTURES", dict(_registry._ARCHITECTURES))

    @register_architecture
    class Greedy(RestorationModel):
        def __init__(self, *, size: int = 1) -> None:
            super().__init__()
            raise ValueError("never builds")

        @classmethod
        def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
            return {"size": len(state_dict)}  # claims every state dict

    net = create_model("nafnet", **TINY["nafnet"])
    assert detect_architecture(net.state_dict())[0] == "NAFNet"
    assert detect_architecture({"foo.weight": torch.zeros(1)}) == ("Greedy", {"size": 1})  # the only claim


@pytest.mark.parametrize("num", [3, 6])
def test_pip_degradation_names_guessed_from_the_vocabulary(num: int) -> None:
    """Bare PIP weights do not store their degradation names: they are guessed in label order, with a warning."""
    from allinone_ir.degradation_types import DEGRADATION_TABLE

    kwargs = dict(TINY["pip_nafnet"], degradations=[f"d{i}" for i in range(num)])
    net = create_model("pip_nafnet", **kwargs)
    with pytest.warns(UserWarning, match=f"{num} degradation prompts"):
        loaded = load_checkpoint(net.state_dict())
    expected = [d.name for d in DEGRADATION_TABLE][:num]
    assert list(loaded.degradations) == expected  # 6 prompts: ..., "lowlight", "snow"
    assert expected[-1] == ("haze" if num == 3 else "snow")
