"""Shared behaviour of every registered network, in tiny configurations, plus full-size facts."""

from __future__ import annotations

import pytest
import torch

from allinone_ir import NAFNet, PromptIR, Restormer, create_model, list_models
from allinone_ir.errors import ModelArgumentError, UsageError
from allinone_ir.models import PROMPTIR_UNUSED_MODULES, get_model_class, register_model

from .tiny_configs import TINY
from .tiny_configs import tiny_model as _tiny

CL = torch.channels_last
ALL = list_models()


def test_every_registered_model_has_a_tiny_config() -> None:
    assert sorted(TINY) == ALL


@pytest.mark.parametrize("name", ALL)
class TestEveryModel:
    def test_odd_size_keeps_shape(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(1, 3, 37, 53)
        y = model(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert model(torch.rand(2, 3, 1, 1)).shape == (2, 3, 1, 1)

    def test_backward_reaches_every_parameter(self, name: str) -> None:
        model = _tiny(name).train()
        model(torch.rand(2, 3, 24, 20)).square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == [], f"parameters without gradient (unused parameters break DDP): {missing}"

    def test_channels_last_equals_contiguous(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(2, 3, 32, 24)
        with torch.no_grad():
            ref = model(x)
            out = model.to(memory_format=CL)(x.to(memory_format=CL))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)

    def test_eval_deterministic_and_batch_independent(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(3, 3, 16, 24)
        with torch.no_grad():
            a, b = model(x), model(x)
            one = torch.cat([model(x[i : i + 1]) for i in range(3)])
        assert torch.equal(a, b)
        torch.testing.assert_close(a, one, atol=1e-5, rtol=1e-4)

    def test_bf16_autocast_close_to_fp32(self, name: str) -> None:
        model = _tiny(name).eval()
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            ref = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
        assert torch.isfinite(out).all()
        assert (out.float() - ref).abs().max() < 0.1

    def test_fp16_autocast_close_to_fp32_also_on_a_black_image(self, name: str) -> None:
        model = _tiny(name).eval()
        for x in (torch.rand(1, 3, 16, 24), torch.zeros(1, 3, 8, 8)):
            with torch.no_grad():
                ref = model(x)
                with torch.autocast("cpu", dtype=torch.float16):
                    out = model(x)
            assert torch.isfinite(out).all()
            assert (out.float() - ref).abs().max() < 0.1

    def test_config_rebuilds_same_architecture(self, name: str) -> None:
        model = _tiny(name)
        clone = get_model_class(type(model).__name__)(**model.config)
        assert list(clone.state_dict()) == list(model.state_dict())


def _takes_out_channels(name: str) -> bool:
    with torch.device("meta"):
        return "out_channels" in create_model(name, **TINY[name]).config


@pytest.mark.parametrize("name", [n for n in ALL if _takes_out_channels(n)])
def test_output_channels_other_than_input_channels(name: str) -> None:
    model = _tiny(name)
    for c_in, c_out in [(3, 1), (4, 3)]:
        config = dict(model.config, in_channels=c_in, out_channels=c_out)
        other = get_model_class(type(model).__name__)(**config).eval()
        with torch.no_grad():
            assert other(torch.rand(2, c_in, 17, 33)).shape == (2, c_out, 17, 33)


class TestFullSize:
    @pytest.mark.parametrize(
        ("name", "count"),
        [
            ("promptir", 35_376_967),
            ("restormer", 26_126_644),
            ("restormer_biasfree", 26_111_668),
            ("nafnet", 29_159_715),
            ("nafnet_width32", 29_159_715),
            ("nafnet_width64", 67_888_835),
            ("nafnet_sidd_width64", 115_982_915),
            ("nafnet_gopro_width32", 17_111_907),
        ],
    )
    def test_parameter_count_and_small_forward(self, name: str, count: int) -> None:
        model = create_model(name).eval()
        assert sum(p.numel() for p in model.parameters()) == count
        with torch.no_grad():
            y = model(torch.rand(1, 3, 32, 32))
        assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()

    def test_promptir_prompt_tensor_count_and_done_criterion(self) -> None:
        model = PromptIR()
        n = sum(p.numel() for k, p in model.named_parameters() if k.endswith("prompt_param"))
        assert n == 2_375_680
        with torch.no_grad():
            assert model(torch.rand(1, 3, 50, 70)).shape == (1, 3, 50, 70)

    def test_promptir_official_key_names(self) -> None:
        keys = set(PromptIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1).state_dict())
        for k in [
            "patch_embed.proj.weight",
            "encoder_level1.0.attn.qkv_dwconv.weight",
            "encoder_level1.0.norm1.body.weight",
            "encoder_level1.0.norm1.body.bias",
            "encoder_level1.0.attn.temperature",
            "encoder_level1.0.ffn.project_in.weight",
            "down1_2.body.0.weight",
            "latent.0.ffn.dwconv.weight",
            "prompt1.prompt_param",
            "prompt3.linear_layer.weight",
            "prompt2.conv3x3.weight",
            "noise_level3.attn.qkv.weight",
            "reduce_noise_level3.weight",
            "up4_3.body.0.weight",
            "reduce_chan_level3.weight",
            "reduce_chan_level2.weight",
            "decoder_level1.0.attn.project_out.weight",
            "refinement.0.norm2.body.weight",
            "output.weight",
        ]:
            assert k in keys, k
        assert not any(k.split(".")[0] in PROMPTIR_UNUSED_MODULES for k in keys)

    def test_official_shapes(self) -> None:
        sd = PromptIR().state_dict()
        assert sd["prompt3.prompt_param"].shape == (1, 5, 320, 16, 16)
        assert sd["noise_level3.attn.qkv.weight"].shape == (704 * 3, 704, 1, 1)
        assert sd["reduce_noise_level3.weight"].shape == (192, 704, 1, 1)
        assert sd["reduce_chan_level3.weight"].shape == (192, 288, 1, 1)
        assert sd["reduce_noise_level2.weight"].shape == (192, 320, 1, 1)
        assert sd["reduce_noise_level1.weight"].shape == (96, 160, 1, 1)
        assert Restormer().state_dict()["reduce_chan_level3.weight"].shape == (192, 384, 1, 1)
        nk = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)).state_dict()
        for k in ["intro.weight", "encoders.0.0.conv1.weight", "encoders.0.0.sca.1.weight", "downs.1.bias",
                  "middle_blks.0.beta", "ups.0.0.weight", "decoders.1.0.norm2.weight", "ending.bias"]:  # fmt: skip
            assert k in nk, k


class TestErrors:
    def setup_method(self) -> None:
        self.model = create_model("restormer", **TINY["restormer"])

    def test_wrong_channels(self) -> None:
        with pytest.raises(ValueError, match=r"3 channels.*\(1, 4, 8, 8\)"):
            self.model(torch.rand(1, 4, 8, 8))

    def test_wrong_ndim(self) -> None:
        with pytest.raises(ValueError, match="unsqueeze"):
            self.model(torch.rand(3, 8, 8))

    def test_integer_dtype(self) -> None:
        with pytest.raises(ValueError, match="floating-point"):
            self.model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))

    def test_not_a_tensor(self) -> None:
        with pytest.raises(ValueError, match=r"torch\.Tensor"):
            self.model([[1.0]])  # type: ignore[arg-type]

    def test_arguments_of_a_wrong_type_or_value_name_the_network_and_the_arguments(self) -> None:
        wrong = [
            (dict(width="8"), r"NAFNet cannot be built with width='8': not all arguments converted"),
            (
                dict(enc_blk_nums=2),
                r"NAFNet cannot be built with enc_blk_nums=2: object of type 'int' has no len",
            ),
            (dict(width=-8), r"NAFNet cannot be built with width=-8: "),  # torch's words follow
        ]
        for kwargs, message in wrong:
            with pytest.raises(ModelArgumentError, match=message):
                create_model("nafnet", **kwargs)
        with pytest.raises(UsageError, match="same length"):  # the library's own errors pass unchanged
            NAFNet(enc_blk_nums=(1, 1), dec_blk_nums=(1,))

    def test_input_of_another_dtype_or_device_than_the_weights(self) -> None:
        with pytest.raises(
            UsageError, match=r"input is torch\.float64 on cpu.*weights are torch\.float32 on cpu"
        ):
            self.model(torch.rand(1, 3, 8, 8, dtype=torch.float64))
        with pytest.raises(
            UsageError, match=r"input is torch\.float32 on meta.*weights are torch\.float32 on cpu"
        ):
            self.model(torch.rand(1, 3, 8, 8, device="meta"))
        assert self.model.double()(torch.rand(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose
            self.model.float()(torch.rand(1, 3, 8, 8).bfloat16())

    def test_bad_configs(self) -> None:
        with pytest.raises(ValueError, match="same length"):
            NAFNet(enc_blk_nums=(1, 1), dec_blk_nums=(1,))
        with pytest.raises(ValueError, match="3 entries"):
            PromptIR(prompt_dims=(1, 2))
        with pytest.raises(TypeError):
            Restormer(3)  # type: ignore[misc]  # keyword-only


class TestRegistry:
    def test_unknown_name_lists_close_matches(self) -> None:
        with pytest.raises(ValueError, match="Did you mean: promptir"):
            create_model("promtir")

    def test_pattern_and_overrides(self) -> None:
        assert list_models("nafnet*") == [n for n in ALL if n.startswith("nafnet")]
        assert list_models("nothing*") == []
        m = create_model("promptir", **TINY["promptir"])
        assert m.config["dim"] == 8 and m.model_name == "promptir"
        assert create_model("restormer_biasfree", dim=8).config["layer_norm_type"] == "BiasFree"

    def test_duplicate_registration_rejected(self) -> None:
        def promptir() -> torch.nn.Module:  # same name, different function
            return Restormer()

        with pytest.raises(ValueError, match="already registered"):
            register_model(promptir)


@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_same_output_and_grads(name: str) -> None:
    model = _tiny(name).train()
    x = torch.rand(2, 3, 16, 16)
    model(x).mean().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing_stages()
    model(x).mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-5, msg=n)
    with pytest.raises(ValueError, match="not checkpointable"):
        model.set_grad_checkpointing(True, ["no_such_level"])
