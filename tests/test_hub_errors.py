"""What a user is told when a checkpoint, a saved config or a name is wrong (the Python API).

Every problem is one library error (:class:`~allinone_ir.errors.AllInOneIRError`) naming the file
and what is wrong with it, raised where files are read (``hub``), so ``load_checkpoint``,
``from_pretrained``, ``convert_checkpoint`` and ``trainer.init_weights`` all say the same.
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from allinone_ir import create_model
from allinone_ir.errors import (
    AllInOneIRError,
    CheckpointError,
    ModelArgumentError,
    UnknownNameError,
    UsageError,
)
from allinone_ir.hub import (
    convert_checkpoint,
    extract_state_dict,
    from_pretrained,
    load_checkpoint,
    save_pretrained,
)
from allinone_ir.models import get_model_class
from allinone_ir.training import Trainer, TrainerConfig

from .tiny_configs import TINY

pytest.importorskip("safetensors")


def _restormer() -> torch.nn.Module:
    return create_model("restormer", **TINY["restormer"])


class _NotAllowed:  # a class torch.load(weights_only=True) refuses
    pass


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A truncated / random / empty file of each kind, and a save_pretrained folder with truncated weights."""
    good = save_pretrained(_restormer(), tmp_path / "good")
    data = (good / "model.safetensors").read_bytes()
    files = {
        "truncated.safetensors": data[: len(data) // 2],
        "random.safetensors": os.urandom(2000),
        "empty.safetensors": b"",
        "empty.pt": b"",
        "random.pt": b"\x11" + bytes(range(256)) * 8,  # neither zip ("PK") nor pickle (0x80)
    }
    torch.save(_restormer().state_dict(), tmp_path / "whole.pt")
    pt = (tmp_path / "whole.pt").read_bytes()
    files["truncated.pt"] = pt[: len(pt) // 2]
    out = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    folder = tmp_path / "cut_folder"
    folder.mkdir()
    (folder / "config.json").write_text((good / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["cut_folder"] = folder
    return out


SAFETENSORS_REASON = r"not a valid safetensors file, truncated or corrupt \(Error while deserializing header"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.safetensors", SAFETENSORS_REASON),
        ("random.safetensors", SAFETENSORS_REASON),
        ("empty.safetensors", r"empty file \(0 bytes\)"),
        ("empty.pt", r"empty file \(0 bytes\)"),
        (
            "random.pt",
            r"not a PyTorch checkpoint: neither a zip archive nor a pickle \(it starts with b'\\x11",
        ),
        ("truncated.pt", r"truncated or corrupt PyTorch checkpoint \(a zip archive that cannot be read: "),
        ("cut_folder", SAFETENSORS_REASON),
    ],
)
def test_a_bad_file_is_one_checkpoint_error_naming_it(
    bad_files: dict[str, Path], name: str, reason: str
) -> None:
    path = bad_files[name]
    shown = path / "model.safetensors" if path.is_dir() else path
    expected = rf"^cannot read checkpoint {re.escape(str(shown))}: {reason}"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, "restormer")
    with pytest.raises(CheckpointError, match=expected):
        convert_checkpoint(path, path.parent / "out.safetensors")
    assert not (path.parent / "out.safetensors").exists()
    if name.endswith(".safetensors") or path.is_dir():
        with pytest.raises(CheckpointError, match=expected):
            from_pretrained(path)


def test_init_weights_from_a_truncated_safetensors_file(bad_files: dict[str, Path], tmp_path: Path) -> None:
    from allinone_ir.data import SyntheticDegradationDataset

    path = bad_files["truncated.safetensors"]
    data = SyntheticDegradationDataset([torch.rand(3, 24, 24)] * 2, tasks=["rain"], patch_size=16)
    cfg = TrainerConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1, progress_bar=False,
                        plot=False, init_weights=str(path))  # fmt: skip
    with pytest.raises(
        CheckpointError, match=rf"init_weights {re.escape(str(path))}: .*{SAFETENSORS_REASON}"
    ):
        Trainer(_restormer(), cfg, data)


def test_a_real_pickle_with_python_objects_is_still_told_apart(tmp_path: Path) -> None:
    for legacy in (False, True):
        path = tmp_path / f"objects_{legacy}.pt"
        obj = {"w": torch.zeros(1), "o": collections.OrderedDict(), "x": _NotAllowed()}
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(
            CheckpointError, match=r"contains Python objects .*_NotAllowed\). If you trust the file"
        ):
            load_checkpoint(path)
    # a legacy pickle cut in the middle of a torch name is corrupt, not "objects"
    torch.save({"w": torch.zeros(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    cut = data.index(b"_rebuild_tensor") + 10
    (tmp_path / "legacy_cut.pt").write_bytes(data[:cut])
    with pytest.raises(
        CheckpointError, match=r"legacy_cut\.pt: truncated or corrupt PyTorch checkpoint \(a pickle"
    ):
        load_checkpoint(tmp_path / "legacy_cut.pt")


def test_safetensors_content_under_another_suffix_is_read(tmp_path: Path) -> None:
    net = _restormer()
    folder = save_pretrained(net, tmp_path / "sp")
    renamed = tmp_path / "weights.pth"
    renamed.write_bytes((folder / "model.safetensors").read_bytes())
    assert load_checkpoint(renamed).config == net.config


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"architecture": "Restormer", ', r"config\.json is not valid JSON \(Expecting"),
        ("[1, 2]", r"config\.json must hold a JSON object, got list"),
        ('{"arch": "Restormer"}', r"config\.json must name the network: .*it has the keys \['arch'\]"),
    ],
)
def test_a_bad_config_json_names_the_file(tmp_path: Path, text: str, reason: str) -> None:
    folder = save_pretrained(_restormer(), tmp_path / "sp")
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(folder))}/{reason}"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(folder)


def test_a_saved_config_the_network_refuses_names_the_file_and_the_argument(tmp_path: Path) -> None:
    folder = save_pretrained(_restormer(), tmp_path / "sp")
    saved = json.loads((folder / "config.json").read_text())
    saved["config"]["dimm"] = 8
    (folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(folder))}: .*'dimm' \(did you mean 'dim'\?\)"
    ):
        from_pretrained(folder)
    saved["architecture"] = "NoSuchNet"
    (folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match=r"was saved from unknown architecture 'NoSuchNet'"):
        from_pretrained(folder)


def test_unknown_names_and_arguments_are_library_errors_listing_what_is_known() -> None:
    with pytest.raises(
        UnknownNameError, match=r"^unknown model 'promtir'\. Did you mean: promptir(, \w+)*\? Known: adair"
    ):
        create_model("promtir")
    with pytest.raises(KeyError, match=r"unknown architecture 'Restormr'\. Did you mean: Restormer, "):
        get_model_class("Restormr")
    state = _restormer().state_dict()
    with pytest.raises(
        UnknownNameError, match=r"model or architecture 'restromer'\. Did you mean: restormer"
    ):
        load_checkpoint(state, "restromer")
    with pytest.raises(
        ModelArgumentError, match=r"^Restormer does not take the argument 'dimm' \(did you mean 'dim'"
    ):
        create_model("restormer", dimm=8)
    with pytest.raises(TypeError, match=r"it takes: in_channels, out_channels, dim, "):
        load_checkpoint(state, "restormer", widht=3)
    for exc in (UnknownNameError, ModelArgumentError):
        assert issubclass(exc, AllInOneIRError)


def test_one_wrong_shape_names_the_tensor_not_a_hyper_parameter() -> None:
    state = dict(_restormer().state_dict())
    state["patch_embed.proj.weight"] = torch.zeros(9, 3, 3, 3)  # dim is read from this tensor
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(state)
    msg = str(info.value)
    assert msg.startswith(
        "the given state dict: key patch_embed.proj.weight has shape (9, 3, 3, 3), expected (8, 3, 3, 3) "
        f"(the other {len(state) - 1} tensors fit Restormer with dim=8)"
    ), msg
    assert "dim': 9" not in msg and "mismatches" not in msg
    # heads are read from the first attention of a level: the odd one is named, the others agree
    state = dict(_restormer().state_dict())
    state["encoder_level1.0.attn.temperature"] = torch.ones(2, 1, 1)
    with pytest.raises(CheckpointError, match=r"key encoder_level1\.0\.attn\.temperature has shape \(2, 1, 1\), "
                                              r"expected \(1, 1, 1\)"):  # fmt: skip
        load_checkpoint(state)


def test_a_detected_config_that_does_not_build_is_a_checkpoint_error() -> None:
    state = dict(_restormer().state_dict())  # heads (1, 2, 2, 4); the latent level has one block
    state["latent.0.attn.temperature"] = torch.ones(5, 1, 1)  # 32 channels / 5 heads
    with pytest.raises(CheckpointError, match=r"Restormer cannot be built with the hyper-parameters read from its "
                                              r"weights .*'heads': \[1, 2, 2, 5\]"):  # fmt: skip
        load_checkpoint(state)


def test_a_wrapper_prefix_is_stripped_only_when_nothing_is_lost() -> None:
    net = _restormer()
    ours = {f"net.{k}": v for k, v in net.state_dict().items()}
    assert extract_state_dict({"state_dict": ours}).keys() == net.state_dict().keys()
    # entries of the training wrapper's loss beside the network: dropped, and said so
    with_loss = {**ours, "loss_fn.vgg.weight": torch.zeros(2), "criterion.w": torch.zeros(1)}
    with pytest.warns(
        UserWarning, match=r"ignored 2 checkpoint entries .*'net\.'.*loss_fn\.vgg\.weight, criterion\.w"
    ):
        assert extract_state_dict({"state_dict": with_loss}).keys() == net.state_dict().keys()
    # other keys (a second network, say) are kept: loading reports them instead of dropping them
    other = {**ours, "ema_net.patch_embed.proj.weight": torch.zeros(8, 3, 3, 3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = extract_state_dict({"state_dict": other})
    assert "ema_net.patch_embed.proj.weight" in state and len(state) == len(ours) + 1
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \[ema_net\.patch_embed\.proj\.weight\]"):
        load_checkpoint({"state_dict": other})
    # a key that would collide with a stripped one: two networks in one file
    clash = {**ours, "patch_embed.proj.weight": torch.zeros(8, 3, 3, 3)}
    with pytest.raises(
        CheckpointError, match=r"both net\.patch_embed\.proj\.weight and patch_embed\.proj\.weight"
    ):
        extract_state_dict(clash)


def test_full_size_promptir_with_one_wrong_width_names_the_tensor() -> None:
    """The released PromptIR's layout (meta tensors) with ``patch_embed`` one channel wider."""
    with torch.device("meta"):
        net = create_model("promptir")
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["net.patch_embed.proj.weight"] = torch.zeros(49, 3, 3, 3, device="meta")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint({"state_dict": state}, map_location="meta")
    assert str(info.value) == (
        "the given state dict: key patch_embed.proj.weight has shape (49, 3, 3, 3), expected (48, 3, 3, 3) "
        f"(the other {len(state) - 1} tensors fit PromptIR with dim=48); the file is corrupt or was edited"
    )


def test_the_network_given_first_is_told_the_order(tmp_path: Path) -> None:
    from allinone_ir.errors import UsageTypeError
    from allinone_ir.hub import load_checkpoint

    net = create_model("nafnet", width=8, enc_blk_nums=(1,), middle_blk_num=1, dec_blk_nums=(1,))
    torch.save(net.state_dict(), tmp_path / "n.pth")
    with pytest.raises(
        UsageTypeError, match=r"got NAFNet; the checkpoint comes first: load_checkpoint\(path, model\)"
    ):
        load_checkpoint(net, tmp_path / "n.pth")  # type: ignore[arg-type]
    assert isinstance(load_checkpoint(tmp_path / "n.pth", net), type(net))


def test_strict_false_with_no_key_in_common_is_refused_not_a_random_network(tmp_path: Path) -> None:
    path = tmp_path / "restormer.pth"
    torch.save(_restormer().state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"restormer\.pth shares no key with NAFNet: strict=False would load"
    ):
        load_checkpoint(path, "nafnet", strict=False)
    partial = {k: v for k, v in _restormer().state_dict().items() if not k.startswith("output.")}
    assert (
        type(load_checkpoint(partial, "restormer", strict=False, **TINY["restormer"])).__name__ == "Restormer"
    )


def test_an_unavailable_map_location_is_named_not_a_corrupt_file(tmp_path: Path) -> None:
    torch.save(_restormer().state_dict(), tmp_path / "w.pth")
    save_pretrained(_restormer(), tmp_path / "folder")
    for source in (tmp_path / "w.pth", tmp_path / "folder"):
        with pytest.raises(UsageError, match=r"^map_location: expected a device such as 'cpu'.*got 'gpu'$"):
            load_checkpoint(source, map_location="gpu")
        if not torch.cuda.is_available():
            with pytest.raises(UsageError, match=r"^map_location: 'cuda' is not available"):
                from_pretrained(source if source.is_dir() else tmp_path / "folder", map_location="cuda")
            with pytest.raises(UsageError, match=r"^map_location: 'cuda' is not available"):
                load_checkpoint(source, map_location="cuda")
