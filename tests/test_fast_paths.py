"""Every fast path gives the outputs (and gradients) of the plain fp32 NCHW computation.

No timing thresholds here: speed is measured by ``benchmarks/bench.py``; these tests only pin
down that channels-last, the split GDFN, the prompt-basis mixing, bf16
autocast, activation checkpointing and ``torch.compile`` compute the same function.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from allinone_ir.layers import GDFN, MDTA, TransformerBlock, channel_attention
from allinone_ir.models.promptir import PromptGenBlock

from .test_layers import _reference_mdta_attention
from .tiny_configs import randomise as _randomise

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "benchmarks")
)  # the harness is outside the package
import harness as bench
from bench import main
from harness import BenchResult, benchmark, count_flops, format_table

from .tiny_configs import tiny_model as _tiny

CL = torch.channels_last
FAST_MODELS = ["restormer", "promptir", "nafnet"]


class TestChannelAttention:
    def test_channel_attention_channels_last_slices(self) -> None:
        qkv = torch.randn(3, 24, 4, 6, dtype=torch.float64)
        temp = torch.rand(4, 1, 1, dtype=torch.float64) + 0.5
        ref = channel_attention(*qkv.chunk(3, 1), temp, 4)
        out = channel_attention(*qkv.contiguous(memory_format=CL).chunk(3, 1), temp, 4)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(ref, _reference_mdta_attention(*qkv.chunk(3, 1), temp, 4))

    def test_mdta_with_bias_matches_manual_pipeline(self) -> None:
        m = _randomise(MDTA(8, num_heads=2, bias=True)).double()
        x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
        qkv = F.conv2d(F.conv2d(x, m.qkv.weight, m.qkv.bias), m.qkv_dwconv.weight, m.qkv_dwconv.bias,
                       padding=1, groups=24)  # fmt: skip
        attn = _reference_mdta_attention(*qkv.chunk(3, 1), m.temperature, 2)
        ref = F.conv2d(attn, m.project_out.weight, m.project_out.bias)
        torch.testing.assert_close(m(x), ref)
        xc = x.contiguous(memory_format=CL).requires_grad_()
        out = m.to(memory_format=CL)(xc)
        torch.testing.assert_close(out, ref)
        (grad,) = torch.autograd.grad(out.square().sum(), xc)
        x.requires_grad_()
        (ref_grad,) = torch.autograd.grad(m.to(memory_format=torch.contiguous_format)(x).square().sum(), x)
        torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("grad", [False, True])
def test_gdfn_equals_its_definition_in_both_layouts(grad: bool) -> None:
    m = _randomise(GDFN(6, ffn_expansion_factor=2.66, bias=True)).double()
    hid = m.project_out.in_channels
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    y = F.conv2d(F.conv2d(x, m.project_in.weight, m.project_in.bias), m.dwconv.weight, m.dwconv.bias,
                 padding=1, groups=2 * hid)  # fmt: skip
    ref = F.conv2d(F.gelu(y[:, :hid]) * y[:, hid:], m.project_out.weight, m.project_out.bias)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(m(x), ref)
        torch.testing.assert_close(m.to(memory_format=CL)(x.contiguous(memory_format=CL)), ref)
    if grad:
        params = list(m.parameters())
        got = torch.autograd.grad(m(x).square().sum(), params)
        want = torch.autograd.grad(ref.square().sum(), params)
        for g, r in zip(got, want, strict=True):
            torch.testing.assert_close(g, r)


def _plain_block(blk: TransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """The textbook transformer block (unfused norms, chunked GDFN, unfused attention) with ``blk``'s weights."""

    def ln(norm: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        body = norm.body
        tp = t.permute(0, 2, 3, 1)
        if body.bias is not None:
            return F.layer_norm(tp, (tp.shape[-1],), body.weight, body.bias, body.eps).permute(0, 3, 1, 2)
        var = tp.var(dim=-1, keepdim=True, unbiased=False)
        return (tp / torch.sqrt(var + body.eps) * body.weight).permute(0, 3, 1, 2)

    a, f = blk.attn, blk.ffn
    qkv = F.conv2d(F.conv2d(ln(blk.norm1, x), a.qkv.weight, a.qkv.bias), a.qkv_dwconv.weight, a.qkv_dwconv.bias,
                   padding=1, groups=a.qkv_dwconv.groups)  # fmt: skip
    att = _reference_mdta_attention(*qkv.chunk(3, 1), a.temperature, a.num_heads)
    x = x + F.conv2d(att, a.project_out.weight, a.project_out.bias)
    y = F.conv2d(F.conv2d(ln(blk.norm2, x), f.project_in.weight, f.project_in.bias), f.dwconv.weight,
                 f.dwconv.bias, padding=1, groups=f.dwconv.groups)  # fmt: skip
    hid = f.project_out.in_channels
    return x + F.conv2d(F.gelu(y[:, :hid]) * y[:, hid:], f.project_out.weight, f.project_out.bias)


class TestTransformerBlock:
    """The block equals the textbook computation (unfused attention), values and gradients, in both layouts."""

    @pytest.mark.parametrize("kind", ["WithBias", "BiasFree"])
    @pytest.mark.parametrize("layout", ["nchw", "channels_last"])
    @pytest.mark.parametrize("bias", [False, True])
    def test_block_values_and_gradients_equal_textbook(self, kind: str, layout: str, bias: bool) -> None:
        torch.manual_seed(0)
        blk = _randomise(TransformerBlock(8, 2, bias=bias, layer_norm_type=kind)).double()
        x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
        if layout == "channels_last":
            blk, x = blk.to(memory_format=CL), x.contiguous(memory_format=CL)
        x.requires_grad_()
        out, ref = blk(x), _plain_block(blk, x)
        torch.testing.assert_close(out, ref)
        g = torch.randn_like(ref)
        inputs = [x, *blk.parameters()]
        for got, want in zip(
            torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True
        ):
            torch.testing.assert_close(got, want)

    def test_frozen_parameters_get_no_gradient(self) -> None:
        blk = _randomise(TransformerBlock(8, 2)).double()
        for p in (
            blk.norm1.body.weight,
            blk.attn.qkv.weight,
            blk.ffn.dwconv.weight,
            blk.ffn.project_out.weight,
        ):
            p.requires_grad_(False)
        x = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
        blk(x).sum().backward()
        assert blk.attn.qkv.weight.grad is None and blk.ffn.dwconv.weight.grad is None
        assert blk.norm2.body.weight.grad is not None and x.grad is not None

    def test_bf16_autocast_training_gradients_close_to_fp32(self) -> None:
        torch.manual_seed(0)
        blk = TransformerBlock(16, 2).to(memory_format=CL)
        x = torch.randn(2, 16, 8, 8).contiguous(memory_format=CL)
        blk(x).square().mean().backward()
        ref = {n: p.grad.clone() for n, p in blk.named_parameters()}
        blk.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = blk(x)
        out.float().square().mean().backward()
        for n, p in blk.named_parameters():
            assert p.grad.dtype == torch.float32, n
            assert (p.grad - ref[n]).norm() <= 0.05 * ref[n].norm() + 1e-6, n


class TestPromptBasisMixing:
    """For batches larger than ``prompt_len`` the components are resized and convolved once, then mixed."""

    @pytest.mark.parametrize("layout", ["nchw", "channels_last"])
    def test_large_batch_equals_per_sample(self, layout: str) -> None:
        gen = _randomise(PromptGenBlock(prompt_dim=4, prompt_len=2, prompt_size=5, lin_dim=6)).double()
        x = torch.randn(5, 6, 9, 7, dtype=torch.float64)  # 5 > prompt_len: the basis path
        if layout == "channels_last":
            gen, x = gen.to(memory_format=CL), x.contiguous(memory_format=CL)
        out = gen(x)
        per_sample = torch.cat([gen(x[i : i + 1]) for i in range(5)])  # 1 <= prompt_len: the mix-first path
        torch.testing.assert_close(out, per_sample)
        if layout == "channels_last":
            assert out.is_contiguous(memory_format=CL)

    def test_gradients_equal_between_paths(self) -> None:
        gen = _randomise(PromptGenBlock(prompt_dim=3, prompt_len=2, prompt_size=4, lin_dim=5)).double()
        x = torch.randn(4, 5, 6, 6, dtype=torch.float64)
        gen(x).square().sum().backward()
        batched = [p.grad.clone() for p in gen.parameters()]
        gen.zero_grad()
        sum(gen(x[i : i + 1]).square().sum() for i in range(4)).backward()
        for g, r in zip(batched, (p.grad for p in gen.parameters()), strict=True):
            torch.testing.assert_close(g, r)


@pytest.mark.parametrize("name", FAST_MODELS)
class TestModelFastPaths:
    def test_channels_last_weights_convert_the_input(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(2, 3, 19, 22)
        with torch.no_grad():
            ref = model(x)
            assert not model.uses_channels_last()
            model = model.to(memory_format=CL)
            assert model.uses_channels_last()
            out = model(x)  # an NCHW input is converted, so the whole network runs channels-last
        assert out.stride(1) == 1  # channels innermost: channels-last storage (cropped from the padded map)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)

    def test_bf16_autocast_channels_last_close_to_fp32(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(1, 3, 24, 24)
        with torch.no_grad():
            ref = model(x)
            model = model.to(memory_format=CL)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
        assert torch.isfinite(out).all()
        assert (out.float() - ref).abs().max() < 0.1
        assert (out.float() - ref).abs().mean() < 0.02

    def test_checkpointed_channels_last_training_step_equals_plain(self, name: str) -> None:
        model = _tiny(name).train()
        x = torch.rand(2, 3, 16, 16)
        model(x).square().mean().backward()
        ref = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        model = model.to(memory_format=CL)
        model.set_grad_checkpointing(True, model.grad_checkpointing_stages()[:2])  # some levels only
        model(x).square().mean().backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-4, msg=n)


@pytest.mark.slow  # torch.compile: about a minute on 2 cores
def test_torch_compile_tiny_promptir_matches_eager() -> None:
    """Whole network, one graph (``fullgraph``: no graph breaks), forward and backward."""
    torch._dynamo.reset()
    model = _tiny("promptir").to(memory_format=CL)
    x = torch.rand(2, 3, 16, 16)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-4)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


class TestBenchmark:
    _NAF = dict(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))

    @pytest.mark.parametrize("groups", [1, 2])
    def test_count_flops_of_a_convolution_and_its_backward(self, groups: int) -> None:
        conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False, groups=groups)
        x = torch.rand(2, 4, 5, 5, requires_grad=True)
        fwd = 2 * 2 * 6 * (4 // groups) * 9 * 25
        assert count_flops(lambda: conv(x)) == fwd
        assert count_flops(lambda: conv(x).sum().backward()) == 3 * fwd  # grad-input and grad-weight

    def test_benchmark_row(self) -> None:
        row = benchmark("nafnet", size=16, batch=2, repeats=2, warmup=0, model_kwargs=self._NAF,
                        peak_gflops=100.0, mode="train")  # fmt: skip
        assert isinstance(row, BenchResult) and not row.grad_checkpointing and row.mode == "train"
        assert len(row.times_s) == 2 and row.median_s > 0
        assert row.images_per_s == pytest.approx(2 / row.median_s)
        assert row.gflops == pytest.approx(row.gflop / row.median_s)
        assert row.peak_fraction == pytest.approx(row.gflops / 100.0)
        infer = benchmark("nafnet", size=16, batch=2, repeats=1, warmup=0, model_kwargs=self._NAF,
                          peak_gflops=100.0)  # fmt: skip
        assert 2.5 < row.gflop / infer.gflop < 3.0  # backward costs twice the forward (less the input grad)
        ckpt = benchmark("nafnet", size=16, batch=2, repeats=1, warmup=0, model_kwargs=self._NAF,
                         peak_gflops=100.0, mode="train", grad_checkpointing=True)  # fmt: skip
        assert ckpt.grad_checkpointing and 3.2 < ckpt.gflop / infer.gflop < 4.0  # plus the recomputed forward
        assert format_table([row, infer]).count("\n") == 3

    @pytest.mark.parametrize("native", [False, True])
    def test_emulated_low_precision_has_no_peak_fraction(self, monkeypatch, native: bool) -> None:
        import allinone_ir.inference as inference

        measured: list[torch.dtype] = []

        def fake_peak(dtype: torch.dtype, device: object) -> float:
            measured.append(dtype)
            return 50.0

        # the CI machine may or may not have native bf16: decide it here
        monkeypatch.setattr(
            inference, "native_low_precision", lambda dtype, device: native or dtype == torch.float32
        )
        monkeypatch.setattr(bench, "measure_matmul_peak", fake_peak)
        grid = bench.run_grid(["nafnet"], [16], [1], dtypes=("fp32", "bf16"), repeats=1, warmup=0,
                              model_kwargs=self._NAF)  # fmt: skip
        if native:
            rows = list(grid)
        else:
            with pytest.warns(RuntimeWarning, match="bf16 is emulated on this cpu"):
                rows = list(grid)
        fp32, bf16 = rows
        assert measured == ([torch.float32, torch.bfloat16] if native else [torch.float32])
        assert fp32.peak_fraction == pytest.approx(fp32.gflops / 50.0)
        table = format_table(rows).splitlines()
        if native:
            assert bf16.peak_fraction == pytest.approx(bf16.gflops / 50.0)
            assert "emulated" not in format_table(rows)
        else:
            assert bf16.peak_fraction is None and "| emulated |" in table[3] and "emulated" not in table[2]
            # a row timed on its own neither measures the (minutes-long) fallback matmul nor reports a fraction
            row = bench.benchmark("nafnet", size=16, batch=1, dtype="bf16", repeats=1, warmup=0,
                                  model_kwargs=self._NAF)  # fmt: skip
            assert row.peak_fraction is None and measured == [torch.float32]
            assert json.loads(json.dumps(dataclasses.asdict(row)))["peak_fraction"] is None

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="dtype"):
            benchmark("nafnet", dtype="fp8")
        with pytest.raises(ValueError, match="memory_format"):
            benchmark("nafnet", memory_format="nhwc")
        with pytest.raises(ValueError, match="mode"):
            benchmark("nafnet", mode="eval")

    def test_cli_json_and_no_overwrite(self, tmp_path, capsys) -> None:
        out = tmp_path / "bench.json"
        args = ["--models", "nafnet", "--sizes", "16", "--batch", "1", "--repeats", "1", "--warmup", "0",
                "--memory-formats", "contiguous,channels_last", "--model-kwargs", json.dumps(self._NAF)]  # fmt: skip
        assert main([*args, "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert [r["memory_format"] for r in data["results"]] == ["contiguous", "channels_last"]
        assert data["environment"]["torch"] == torch.__version__
        assert "| nafnet | allinone-ir | infer | 16 | 1 | fp32 |" in capsys.readouterr().out
        assert main([*args, "--json", str(out)]) == 1  # refuses to overwrite
        assert main(["--models", "no_such_model"]) == 2


_FAKE_PROMPTIR = """
import torch
from torch import nn

class PromptIR(nn.Module):
    def __init__(self, decoder=False):
        super().__init__()
        self.decoder = decoder
        self.body = nn.Conv2d(3, 3, 1)
        for name in ("chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1",
                     "reduce_noise_channel_2", "reduce_noise_channel_3"):
            setattr(self, name, nn.Conv2d(3, 3, 1))

    def forward(self, x):
        return x + self.body(x)
"""

_FAKE_PIP_NET = """
import sys
sys.path.append("..")
from net.PIP import *  # the official layout: src/net/PIP_Net.py imports its sibling as net.PIP
"""

_FAKE_PIP = """
import clip
import torchvision
import torch
from torch import nn

class PIPNet_Restormer_onskip_inter(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs
        self.body = nn.Conv2d(3, 3, 1)

    def forward(self, x, noise_emb=None, degradation_class=None):
        assert degradation_class is not None and degradation_class.dtype == torch.long
        return x + self.body(x), []
"""


class TestReferenceLoading:
    """load_reference builds the official networks from their files (fakes with the official layout here)."""

    def test_promptir_drops_unused_modules(self, tmp_path) -> None:
        from harness import load_reference

        path = tmp_path / "model.py"
        path.write_text(_FAKE_PROMPTIR)
        ref = load_reference("promptir", str(path))
        assert (
            ref.decoder
            and not hasattr(ref, "chnl_reduce1")
            and set(ref.state_dict()) == {"body.weight", "body.bias"}
        )
        with pytest.raises(FileNotFoundError):
            load_reference("promptir", str(tmp_path / "missing.py"))
        with pytest.raises(ValueError, match="no reference"):
            load_reference("nafnet", str(path))

    def test_pip_stubs_imports_and_takes_labels(self, tmp_path, monkeypatch) -> None:
        import sys

        from harness import load_reference

        net_dir = tmp_path / "src" / "net"
        net_dir.mkdir(parents=True)
        (net_dir / "__init__.py").write_text("")
        (net_dir / "PIP_Net.py").write_text(_FAKE_PIP_NET)
        (net_dir / "PIP.py").write_text(_FAKE_PIP)
        monkeypatch.setattr(sys, "path", list(sys.path))
        for name in ("net", "net.PIP", "clip", "torchvision"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        ref = load_reference("pip_restormer", str(net_dir / "PIP_Net.py"))
        assert ref.accepts_degradation and ref.net.kwargs["prompt_interaction_mode"] == "pip_cross_topm"
        assert ref.net.kwargs["low_prompt_dims"] == [64, 128, 256]
        x = torch.rand(2, 3, 4, 4)
        assert ref(x).shape == x.shape and ref(x, degradation=torch.tensor([1, 2])).shape == x.shape

    def test_bench_cli_side_by_side(self, tmp_path, capsys, monkeypatch) -> None:
        from allinone_ir.models import create_model

        def fake_load(model: str, path: str) -> torch.nn.Module:
            assert path == "official.py"
            return create_model("nafnet", **TestBenchmark._NAF)

        monkeypatch.setattr(bench, "load_reference", fake_load)
        monkeypatch.setitem(bench.REFERENCE_MODELS, "nafnet", "test")
        args = ["--models", "nafnet", "--sizes", "16", "--repeats", "1", "--warmup", "0",
                "--model-kwargs", json.dumps(TestBenchmark._NAF), "--reference", "official.py"]  # fmt: skip
        assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert [(r["implementation"], r["memory_format"]) for r in rows] == [
            ("official", "contiguous"), ("allinone-ir", "channels_last"),
        ]  # fmt: skip
        assert "the official images/s" in capsys.readouterr().out
        assert main(["--models", "nafnet,restormer", "--reference", "official.py"]) == 2  # whose file?
        assert main(["--models", "nafnet", "--reference", "unet=official.py"]) == 2  # no reference for it


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_under_bf16_autocast_stays_bf16_and_rounds_once(bias: bool) -> None:
    """A bf16 map is normalised in float32 with float32 weights and rounded once (no bf16 weights)."""
    from allinone_ir.layers.norm import layer_norm_2d

    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=CL).bfloat16()
    w, b = torch.rand(8) + 0.5, (torch.randn(8) if bias else None)
    ref = layer_norm_2d(x.float(), w, b).bfloat16().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer_norm_2d(x, w, b)
    assert out.dtype == torch.bfloat16 and out.stride(1) == 1
    torch.testing.assert_close(out.float(), ref, atol=1e-6, rtol=8e-3)  # within one bf16 rounding
