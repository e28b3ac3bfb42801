"""Small local intersphinx inventories used when the online ones cannot be fetched.

CI machines have no internet; intersphinx then falls back to these files, which list the
PyTorch and Python names that the API pages link to (with their real addresses on
docs.pytorch.org and docs.python.org).
"""

from __future__ import annotations

import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent / "generated" / "inventories"

TORCH: list[tuple[str, str, str]] = [
    ("torch.Tensor", "py:class", "tensors.html#$"),
    ("torch.Size", "py:class", "size.html#$"),
    ("torch.device", "py:class", "tensor_attributes.html#$"),
    ("torch.dtype", "py:class", "tensor_attributes.html#$"),
    ("torch.Generator", "py:class", "generated/$.html#$"),
    ("torch.autocast", "py:class", "amp.html#$"),
    ("torch.compile", "py:function", "generated/$.html#$"),
    ("torch.load", "py:function", "generated/$.html#$"),
    ("torch.nn.Module", "py:class", "generated/$.html#$"),
    ("torch.nn.Sequential", "py:class", "generated/$.html#$"),
    ("torch.nn.ModuleList", "py:class", "generated/$.html#$"),
    ("torch.nn.Conv2d", "py:class", "generated/$.html#$"),
    ("torch.nn.LayerNorm", "py:class", "generated/$.html#$"),
    ("torch.nn.GELU", "py:class", "generated/$.html#$"),
    ("torch.nn.PixelShuffle", "py:class", "generated/$.html#$"),
    ("torch.nn.PixelUnshuffle", "py:class", "generated/$.html#$"),
    ("torch.nn.parameter.Parameter", "py:class", "generated/$.html#$"),
    (
        "torch.nn.Parameter",
        "py:class",
        "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter",
    ),
    ("torch.nn.parallel.DistributedDataParallel", "py:class", "generated/$.html#$"),
    ("torch.nn.functional.interpolate", "py:function", "generated/$.html#$"),
    ("torch.nn.functional.layer_norm", "py:function", "generated/$.html#$"),
    ("torch.optim.Optimizer", "py:class", "optim.html#$"),
    ("torch.optim.AdamW", "py:class", "generated/$.html#$"),
    ("torch.optim.Adam", "py:class", "generated/$.html#$"),
    ("torch.optim.lr_scheduler.LRScheduler", "py:class", "generated/$.html#$"),
    ("torch.optim.lr_scheduler.LambdaLR", "py:class", "generated/$.html#$"),
    ("torch.utils.data.Dataset", "py:class", "data.html#$"),
    ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
    (
        "torch.utils.data.DistributedSampler",
        "py:class",
        "data.html#torch.utils.data.distributed.DistributedSampler",
    ),
    ("torch.utils.checkpoint.checkpoint", "py:function", "checkpoint.html#$"),
    ("torch.amp.GradScaler", "py:class", "amp.html#$"),
    ("torch.distributed", "py:module", "distributed.html#module-$"),
    ("torch.onnx.export", "py:function", "onnx_torchscript.html#$"),
]

PYTHON: list[tuple[str, str, str]] = [
    ("str", "py:class", "library/stdtypes.html#$"),
    ("int", "py:class", "library/functions.html#$"),
    ("float", "py:class", "library/functions.html#$"),
    ("bool", "py:class", "library/functions.html#$"),
    ("list", "py:class", "library/stdtypes.html#$"),
    ("dict", "py:class", "library/stdtypes.html#$"),
    ("tuple", "py:class", "library/stdtypes.html#$"),
    ("bytes", "py:class", "library/stdtypes.html#$"),
    ("object", "py:class", "library/functions.html#$"),
    ("None", "py:data", "library/constants.html#$"),
    ("ValueError", "py:exception", "library/exceptions.html#$"),
    ("TypeError", "py:exception", "library/exceptions.html#$"),
    ("KeyError", "py:exception", "library/exceptions.html#$"),
    ("RuntimeError", "py:exception", "library/exceptions.html#$"),
    ("OSError", "py:exception", "library/exceptions.html#$"),
    ("ImportError", "py:exception", "library/exceptions.html#$"),
    ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
    ("FileExistsError", "py:exception", "library/exceptions.html#$"),
    ("pathlib.Path", "py:class", "library/pathlib.html#$"),
    ("os.PathLike", "py:class", "library/os.html#$"),
    ("argparse.Namespace", "py:class", "library/argparse.html#$"),
    ("argparse.ArgumentParser", "py:class", "library/argparse.html#$"),
    ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Iterator", "py:class", "library/collections.abc.html#$"),
    ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
    ("typing.Any", "py:data", "library/typing.html#$"),
    ("typing.Literal", "py:data", "library/typing.html#$"),
    ("typing.Optional", "py:data", "library/typing.html#$"),
    ("typing.Union", "py:data", "library/typing.html#$"),
    ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$"),
]


def _write(name: str, project: str, entries: list[tuple[str, str, str]]) -> str:
    lines = "".join(f"{n} {role} 1 {uri} -\n" for n, role, uri in entries)
    header = f"# Sphinx inventory version 2\n# Project: {project}\n# Version: \n"
    header += "# The remainder of this file is compressed using zlib.\n"
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.inv"
    path.write_bytes(header.encode() + zlib.compress(lines.encode()))
    return str(path)


def torch_inventory() -> str:
    """Write the fallback PyTorch inventory and return its path."""
    return _write("torch", "PyTorch", TORCH)


def python_inventory() -> str:
    """Write the fallback Python inventory and return its path."""
    return _write("python", "Python", PYTHON)
