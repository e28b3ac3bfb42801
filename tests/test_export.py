"""Every registered network under ``torch.compile`` and exported to ONNX (dynamic batch, height, width).

Compile tests trace with ``fullgraph=True`` (no graph break allowed) and ``dynamic=False`` on the
tiny configurations; every network goes through Dynamo with the ``eager`` backend (graph capture is
what breaks on Python-side control flow; code generation does not depend on the network's Python),
and one network runs the full Inductor code generation. The ONNX tests need
onnx, onnxscript and onnxruntime (in the ``export`` and ``test`` extras, so CI runs them; about
2.5 minutes on a 2-core CPU).

ONNX notes (what cannot be exported, and why):

- The exported graph takes ``H`` and ``W`` that are multiples of the network's ``pad_multiple``
  (8 for Restormer / PromptIR / PIP-Restormer, ``2 ** levels`` for NAFNet): ``pad_to_multiple``
  decides in Python whether to pad, which ``torch.export`` specialises on. Pad outside the graph
  (or restore in tiles of such a size).
- Only the ``dynamo=True`` exporter works; the legacy TorchScript exporter fails on the LayerNorm's
  shape-dependent ``normalized_shape``.
- PIP networks export (and compile with ``fullgraph``) in blind mode, their classifier choosing the
  degradation weights. Explicit labels / weights are checked on their values in Python
  (``resolve_degradation_weights``), which ``torch.export`` cannot trace and ``torch.compile``
  handles only with a graph break (``fullgraph=False``).
"""

from __future__ import annotations

import pytest
import torch

from allinone_ir import create_model, list_models

from .tiny_configs import TINY


def _unique_tiny() -> list[str]:
    """One registered name per distinct (class, tiny config): the NAFNet variants share one."""
    seen, names = set(), []
    for name in list_models():
        with torch.device("meta"):
            net = create_model(name, **TINY[name])
        key = (type(net).__name__, repr(net.config))
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


NAMES = _unique_tiny()
# MIRAGE's dynamic depthwise convolution groups its kernels by image (groups = batch x channels, as the
# official code): an ONNX Conv's group is an attribute, so the batch size is fixed at export
STATIC_BATCH_ONNX = {"mirage_s", "mirage_t"}


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model(name, **TINY[name]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.slow  # torch.compile of every network: 10-35 s each on 2 cores
@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph(name: str) -> None:
    """PIP networks in blind mode (their classifier picks the degradation weights)."""
    torch._dynamo.reset()
    net = _build(name)
    x = torch.rand(2, 3, 24, 32)
    compiled = torch.compile(net, backend="eager", fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compile_inductor() -> None:
    """Full Inductor code generation on the smallest network (about 40 s on a 2-core CPU)."""
    torch._dynamo.reset()
    net = create_model("nafnet", width=4, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 3, 16, 16)
    compiled = torch.compile(net, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_dynamic_size(tmp_path, name: str) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs pip install 'allinone-ir[export]'")
    pytest.importorskip("onnxscript", reason="ONNX export needs pip install 'allinone-ir[export]'")
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs pip install 'allinone-ir[export]'")
    net = _build(name)
    m = 8  # a multiple of every network's pad_multiple in the tiny configs
    shapes: dict = {"x": {2: m * torch.export.Dim("h", max=512), 3: m * torch.export.Dim("w", max=512)}}
    if name not in STATIC_BATCH_ONNX:
        shapes["x"][0] = torch.export.Dim("batch", min=1, max=64)
    x = torch.rand(2, 3, 32, 40)
    program = torch.onnx.export(
        net, (x,), dynamo=True, dynamic_shapes=shapes, input_names=["x"], output_names=["y"]
    )
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 32, 40), (1, 16, 64), (3, 48, 24)]:
        n = 2 if name in STATIC_BATCH_ONNX else n
        xi = torch.rand(n, 3, h, w)
        (y,) = session.run(None, {"x": xi.numpy()})
        with torch.no_grad():
            ref = net(xi)
        torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-4)
