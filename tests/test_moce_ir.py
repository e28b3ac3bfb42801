"""MoCE-IR (CVPR 2025): parameter counts, official checkpoints, routing, the balance term, gradients.

Parity with the official code is checked by tests/test_parity.py on stored fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from allinone_ir import create_model
from allinone_ir.hub import convert_checkpoint, detect_architecture, from_pretrained, load_checkpoint
from allinone_ir.models import MoCEIR
from allinone_ir.models.moce_ir import ComplexityExperts, ExpertRouter, expert_ranks
from allinone_ir.training import Trainer, TrainerConfig

from .tiny_configs import TINY

#: A tiny configuration with the official routing (top-1 in training and eval, routing noise in training).
TOP1 = dict(dim=8, num_blocks=(1, 1, 1, 1), num_dec_blocks=(1, 1, 1), num_refinement_blocks=1)


def _meta(name: str, **kw: object) -> MoCEIR:
    with torch.device("meta"):
        return create_model(name, **kw)  # type: ignore[return-value]


@pytest.mark.parametrize(("name", "count"), [("moce_ir", 25_353_796), ("moce_ir_s", 11_477_752)])
def test_parameter_counts_equal_the_official_networks(name: str, count: int) -> None:
    net = _meta(name)
    assert net.num_parameters == count  # the official MoCEIR with the options of its train.py, counted
    assert net.config["dim"] == (48 if name == "moce_ir" else 32)
    assert net.config["top_k"] == 1 and net.config["with_complexity"] is False
    assert net.config["rank_type"] == "spread" and net.config["num_experts"] == 4


def test_official_layout_key_names() -> None:
    keys = set(_meta("moce_ir_s").state_dict())
    for key in (
        "patch_embed.proj.weight",
        "freq_embed.high_conv.0.conv.weight",
        "freq_embed.mlp.2.bias",
        "enc.0.0.layers.3.mixer.qkv_dwconv.bias",
        "enc.2.1.body.0.weight",
        "latent.layers.7.ffn.project_in.weight",
        "dec.0.0.body.0.weight",
        "dec.0.1.weight",
        "dec.0.2.layers.3.norms.1.body.bias",
        "dec.2.2.layers.1.proj.0.bias",
        "dec.2.2.layers.1.shared.temperature",
        "dec.2.2.layers.1.mixer.kv_dwconv.weight",
        "dec.1.2.layers.0.adapter.experts.3.0.body.norm.body.weight",
        "dec.1.2.layers.0.adapter.experts.0.0.proj.2.weight",
        "dec.1.2.layers.0.adapter.proj_out.weight",
        "dec.1.2.layers.0.adapter.routing.gate.2.weight",
        "dec.1.2.layers.0.adapter.routing.freq_gate.weight",
        "dec.1.2.layers.0.adapter.routing.complexity",
        "refinement.layers.3.norms.0.body.weight",
        "output.weight",
    ):
        assert key in keys, key
    assert len(keys) == 1262  # as the official state dict (1262 entries, ``complexity`` buffers included)


@pytest.mark.parametrize("name", ["moce_ir", "moce_ir_s"])
def test_detects_official_lightning_state_dicts(name: str) -> None:
    net = _meta(name)
    official = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 120}
    from allinone_ir.hub import extract_state_dict

    cls, cfg = detect_architecture(extract_state_dict(official))
    assert cls == "MoCEIR"
    assert {k: v for k, v in net.config.items() if k in cfg} == cfg
    assert cfg["dim"] == net.config["dim"] and cfg["rank_type"] == "spread"


def test_official_lightning_checkpoint_loads_and_converts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("moce_ir", **TOP1).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, path)
    loaded = load_checkpoint(path).eval()
    assert isinstance(loaded, MoCEIR)
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
        converted = from_pretrained(convert_checkpoint(path, tmp_path / "moce.safetensors")).eval()
        torch.testing.assert_close(converted(x), net(x), rtol=0, atol=0)


def test_detect_reads_other_rank_types_and_shapes() -> None:
    for kw in (
        dict(rank_type="constant", rank=3, num_experts=3),
        dict(rank_type="lin", rank=2, num_experts=4, heads=(2, 2, 4, 4), ffn_expansion_factor=2.5),
        dict(
            num_blocks=(1, 0, 2),
            num_dec_blocks=(2, 1),
            heads=(1, 2, 2),
            bias=True,
            in_channels=1,
            out_channels=1,
        ),
    ):
        net = _meta("moce_ir", **{**TOP1, **kw})
        cls, cfg = detect_architecture(net.state_dict())
        assert cls == "MoCEIR"
        assert {k: v for k, v in net.config.items() if k in cfg} == cfg, kw
    assert expert_ranks(32, 2, 4, "spread") == [4, 8, 16, 32]


def test_eval_routing_is_deterministic_and_per_image() -> None:
    torch.manual_seed(0)
    net = create_model("moce_ir", **TOP1).eval()
    x = torch.rand(3, 3, 24, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
        singles = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, singles, rtol=1e-5, atol=1e-6)  # each image runs its own experts
    noisy = create_model("moce_ir", **TOP1, eval_routing_noise=True).eval()
    noisy.load_state_dict(net.state_dict())
    with torch.no_grad():
        outs = [noisy(x[:1]) for _ in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the official eval behaviour: random routing


def test_router_noise_top1_and_balance_loss() -> None:
    torch.manual_seed(0)
    router = ExpertRouter(8, 4, torch.tensor([10, 20, 40, 80]), k=1, use_complexity_bias=True).train()
    x, f = torch.randn(6, 8, 5, 5), torch.randn(6, 4)
    gates, idx, loss = router(x, f)
    assert idx.shape == (6, 1) and (gates > 0).sum(dim=1).eq(1).all()
    assert loss.ndim == 0 and loss > 0
    torch.testing.assert_close(router.complexity, torch.tensor([0.125, 0.25, 0.5, 1.0]))
    router.eval()
    g1, _, l1 = router(x, f)
    g2, _, _ = router(x, f)
    assert torch.equal(g1, g2) and float(l1) == 0.0


def test_every_parameter_gets_a_gradient_with_top1_routing() -> None:
    """Experts that no image selects enter the graph with weight 0 (DDP needs a gradient for every parameter)."""
    torch.manual_seed(0)
    net = create_model("moce_ir", **TOP1).train()
    out, balance = net(torch.rand(1, 3, 16, 24), return_balance_loss=True)
    (out.square().mean() + 0.01 * balance).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
    idle = [n for n, p in net.named_parameters() if ".experts." in n and not p.grad.abs().sum() > 0]
    assert idle  # one image, top-1: three experts of each block were not selected, their gradient is 0
    others = [n for n, p in net.named_parameters() if ".experts." not in n and not p.grad.abs().sum() > 0]
    assert others == []


def test_compiled_dense_mixture_equals_sparse_dispatch() -> None:
    torch.manual_seed(0)
    layer = ComplexityExperts(8, [2, 4], freq_dim=6, top_k=1).eval()
    x, f, s = torch.randn(3, 8, 12, 10), torch.randn(3, 6), torch.randn(3, 8, 12, 10)
    with torch.no_grad():
        eager, _ = layer(x, f, s)
        compiled, _ = torch.compile(layer, fullgraph=True, backend="eager")(x, f, s)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_trainer_adds_the_balance_term(tmp_path: Path) -> None:
    from allinone_ir.data import SyntheticDegradationDataset

    g = torch.Generator().manual_seed(0)
    data = SyntheticDegradationDataset(
        [torch.rand(3, 24, 24, generator=g) for _ in range(4)], tasks=["noise_25", "rain"], patch_size=16
    )
    torch.manual_seed(0)
    net = create_model("moce_ir_s", **TOP1)
    cfg = TrainerConfig(
        output_dir=str(tmp_path), max_steps=2, batch_size=2, progress_bar=False, plot=False, log_every=1,
        aux_weights={"balance": 0.5},
    )  # fmt: skip
    trainer = Trainer(net, cfg, data)
    assert [(a.name, a.weight) for a in trainer.aux_losses] == [("balance", 0.5)]
    assert [(a.name, a.weight) for a in net.auxiliary_losses()] == [("balance", 0.01)]
    trainer.fit()
    rows = [h for h in json.loads((tmp_path / "history.json").read_text()) if h["kind"] == "train"]
    assert rows and "loss_balance" in rows[0]
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss_main"] + 0.5 * rows[0]["loss_balance"], rel=1e-5)


def test_tiny_configs_cover_both_names() -> None:
    assert {"moce_ir", "moce_ir_s"} <= set(TINY)


def test_three_task_config_is_valid() -> None:
    from allinone_ir.training.cli import load_config

    cfg = load_config(
        Path(__file__).parents[1] / "src" / "allinone_ir" / "configs" / "moce_ir_three_task.yaml"
    )
    trainer = TrainerConfig.from_dict(cfg["trainer"])
    assert cfg["model"]["name"] == "moce_ir" and cfg["data"]["train"]["type"] == "promptir"
    assert (trainer.lr, trainer.loss, trainer.warmup_steps, trainer.max_steps) == (2e-4, "l1", 37500, 300000)
    terms = {a.name: a.weight for a in _meta(cfg["model"]["name"]).auxiliary_losses()}
    assert trainer.aux_weights == {"balance": 0.01} == terms


def test_channels_last_bf16_and_checkpointed_training() -> None:
    torch.manual_seed(0)
    net = create_model("moce_ir", **TOP1, routing_noise=False).eval()
    x = torch.rand(2, 3, 19, 22)
    with torch.no_grad():
        ref = net(x)
        net = net.to(memory_format=torch.channels_last)
        assert net.uses_channels_last()
        out = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert out.stride(1) == 1  # the whole network ran channels-last
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(low).all() and (low.float() - ref).abs().max() < 0.1
    net.train()
    net(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    assert net.grad_checkpointing_stages() == ["enc.0.0.layers", "enc.1.0.layers", "enc.2.0.layers", "latent.layers",
                                               "refinement.layers"]  # fmt: skip
    net.set_grad_checkpointing(True)
    net(x).square().mean().backward()
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-4, msg=n)
