"""Every fast path gives the outputs (and gradients) of the plain fp32 NCHW computation.

No timing thresholds here: speed is measured by ``benchmarks/bench.py``; these tests only pin
down that channels-last, the fused attention, the split GDFN, the prompt-basis mixing, bf16
autocast, activation checkpointing and ``torch.compile`` compute the same function.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from allinone_ir.benchmark import BenchResult, benchmark, count_flops, format_table, main
from allinone_ir.layers import GDFN, MDTA, PromptGenBlock, channel_attention
from allinone_ir.layers.attention import _reference_mdta_attention, projected_channel_attention
from allinone_ir.layers.feedforward import gelu_gate

from .tiny_configs import randomise as _randomise
from .tiny_configs import tiny_model as _tiny

CL = torch.channels_last
FAST_MODELS = ["restormer", "promptir", "nafnet"]


class TestProjectedAttention:
    @pytest.mark.parametrize("heads", [1, 3])
    @pytest.mark.parametrize("layout", ["nchw", "channels_last"])
    def test_equals_attention_then_projection(self, heads: int, layout: str) -> None:
        n, c, h, w = 2, 6 * heads, 5, 7
        qkv = torch.randn(n, 3 * c, h, w, dtype=torch.float64)
        temp = torch.rand(heads, 1, 1, dtype=torch.float64) + 0.5
        weight = torch.randn(c + 2, c, 1, 1, dtype=torch.float64)  # C_out != C also works
        bias = torch.randn(c + 2, dtype=torch.float64)
        q, k, v = qkv.chunk(3, 1)
        ref = F.conv2d(_reference_mdta_attention(q, k, v, temp, heads), weight, bias)
        inp = qkv.contiguous(memory_format=CL) if layout == "channels_last" else qkv
        out = projected_channel_attention(inp, temp, heads, weight, bias)
        torch.testing.assert_close(out, ref)
        if layout == "channels_last":
            assert out.is_contiguous(memory_format=CL)

    def test_gradients_equal_reference(self) -> None:
        heads, c = 2, 8
        qkv = torch.randn(2, 3 * c, 6, 5, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
        temp = (torch.rand(heads, 1, 1, dtype=torch.float64) + 0.5).requires_grad_()
        weight = torch.randn(c, c, 1, 1, dtype=torch.float64, requires_grad=True)
        grads = torch.autograd.grad(projected_channel_attention(qkv, temp, heads, weight).square().sum(),
                                    (qkv, temp, weight))  # fmt: skip
        q, k, v = qkv.chunk(3, 1)
        ref = F.conv2d(_reference_mdta_attention(q, k, v, temp, heads), weight)
        for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), (qkv, temp, weight)), strict=True):
            torch.testing.assert_close(g, r)

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
        torch.testing.assert_close(m.to(memory_format=CL)(x.contiguous(memory_format=CL)), ref)


@pytest.mark.parametrize("grad", [False, True])
def test_gdfn_split_halves_equal_chunked_definition(grad: bool) -> None:
    m = _randomise(GDFN(6, ffn_expansion_factor=2.66, bias=True)).double()
    hid = m.hidden_features
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    y = F.conv2d(F.conv2d(x, m.project_in.weight, m.project_in.bias), m.dwconv.weight, m.dwconv.bias,
                 padding=1, groups=2 * hid)  # fmt: skip
    ref = F.conv2d(F.gelu(y[:, :hid]) * y[:, hid:], m.project_out.weight, m.project_out.bias)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(m(x), ref)
        torch.testing.assert_close(m.to(memory_format=CL)(x.contiguous(memory_format=CL)), ref)
    if grad:  # the memory-saving gelu_gate recomputes gelu in backward: same gradients
        params = list(m.parameters())
        got = torch.autograd.grad(m(x).square().sum(), params)
        want = torch.autograd.grad(ref.square().sum(), params)
        for g, r in zip(got, want, strict=True):
            torch.testing.assert_close(g, r)


def test_gelu_gate_gradcheck() -> None:
    a = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(gelu_gate(a, b), F.gelu(a) * b)
    assert torch.autograd.gradcheck(gelu_gate, (a, b))
    assert torch.autograd.gradcheck(lambda t: gelu_gate(t, b.detach()), (a,))


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
        assert "| nafnet | infer | 16 | 1 | fp32 |" in capsys.readouterr().out
        assert main([*args, "--json", str(out)]) == 1  # refuses to overwrite
        assert main(["--models", "no_such_model"]) == 2


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_under_bf16_autocast_stays_bf16_and_close(bias: bool) -> None:
    from allinone_ir.layers import layer_norm_2d

    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=CL)
    w, b = torch.rand(8) + 0.5, (torch.randn(8) if bias else None)
    ref = layer_norm_2d(x, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer_norm_2d(x.bfloat16(), w, b)  # no fp32 round trip of the activations
    assert out.dtype == torch.bfloat16 and out.stride(1) == 1
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)
