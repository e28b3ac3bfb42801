"""Directional decoupled loss (PIP Eq. 4 and the official trainer's two forms): values, gradients, dtypes, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import PIPUNet, create_model
from allinone_ir.losses import (
    DEFAULT_DDL_ALPHA,
    DirectionalDecoupledLoss,
    collect_degradation_prompts,
    directional_decoupled_loss,
)

from .tiny_configs import TINY

PI = math.pi


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and avoids OpenMP spin-waits on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _angles_deg(p: torch.Tensor) -> torch.Tensor:
    d = F.normalize(p.detach().double(), dim=1)
    i, j = torch.triu_indices(len(d), len(d), 1)
    return torch.rad2deg(torch.acos((d @ d.T).clamp(-1, 1)[i, j]))


class TestValues:
    def test_orthogonal_prompts_give_zero(self) -> None:
        d = torch.eye(5, 12) * torch.arange(1.0, 6.0).unsqueeze(1)  # orthogonal, different lengths
        assert directional_decoupled_loss(d).item() == 0.0
        assert directional_decoupled_loss(d, form="cosine_hinge").item() == 0.0
        assert directional_decoupled_loss(d, form="abs_cosine").item() == 0.0

    def test_identical_prompts_give_the_threshold_in_radians(self) -> None:
        d = torch.tensor([[0.3, -1.2, 2.0], [0.3, -1.2, 2.0]])
        assert directional_decoupled_loss(d).item() == pytest.approx(PI / 2, abs=1e-6)
        assert directional_decoupled_loss(d, threshold=60.0).item() == pytest.approx(PI / 3, abs=1e-6)
        assert directional_decoupled_loss(d, form="cosine_hinge").item() == pytest.approx(1.0, abs=1e-6)
        assert directional_decoupled_loss(d, form="abs_cosine").item() == pytest.approx(1.0, abs=1e-6)

    def test_hand_computed_three_prompts(self) -> None:
        # pairs: (0,1) 45 deg, (0,2) 90 deg, (1,2) 45 deg -> mean of pi/4, 0, pi/4
        d = torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 3.0]])
        assert directional_decoupled_loss(d).item() == pytest.approx(PI / 6, abs=1e-6)
        assert directional_decoupled_loss(d, reduction="sum").item() == pytest.approx(PI / 2, abs=1e-6)
        cos45 = math.cos(PI / 4)
        assert directional_decoupled_loss(d, form="cosine_hinge").item() == pytest.approx(
            2 * cos45 / 3, abs=1e-6
        )
        # threshold 30 deg: every pair is already wider
        assert directional_decoupled_loss(d, threshold=30.0).item() == 0.0
        # threshold 60 deg: the two 45 deg pairs miss it by 15 deg
        assert directional_decoupled_loss(d, threshold=60.0).item() == pytest.approx(
            2 * PI / 12 / 3, abs=1e-6
        )

    def test_obtuse_pairs_cost_nothing(self) -> None:
        d = torch.tensor([[1.0, 0.0], [math.cos(2 * PI / 3), math.sin(2 * PI / 3)]])  # 120 deg
        assert directional_decoupled_loss(d).item() == 0.0
        assert directional_decoupled_loss(d, form="cosine_hinge").item() == 0.0
        # except under the absolute cosine, which pulls them back to 90 degrees
        assert directional_decoupled_loss(d, form="abs_cosine").item() == pytest.approx(0.5, abs=1e-6)

    def test_the_official_trainers_two_options(self) -> None:
        # the official PIP trainer (longzilicart/pip_universal, src/net/PIP.py, Basic_prompt), restated:
        # option "angle": 0.01 * sum over pairs i < j of relu(cos); option "cosine" (its default):
        # 0.01 * sum of |cos| over the cosine matrix minus the identity (both triangles)
        d = torch.randn(5, 12, dtype=torch.float64)
        n = F.normalize(d, dim=1)
        cos = n @ n.T
        i, j = torch.triu_indices(5, 5, 1)
        official_angle = 0.01 * cos[i, j].relu().sum()
        official_cosine = 0.01 * (cos - torch.eye(5, dtype=torch.float64)).abs().sum()
        hinge = directional_decoupled_loss(d, form="cosine_hinge", reduction="sum")
        absolute = directional_decoupled_loss(d, form="abs_cosine", reduction="sum")
        assert (0.01 * hinge).item() == pytest.approx(official_angle.item(), rel=1e-12)
        assert (0.02 * absolute).item() == pytest.approx(official_cosine.item(), rel=1e-9)

    def test_only_the_three_forms(self) -> None:
        for old in ("angle", "cosine"):
            with pytest.raises(ValueError, match="form must be one of"):
                directional_decoupled_loss(torch.eye(2), form=old)  # type: ignore[arg-type]

    def test_equals_eq4_on_random_prompts(self) -> None:
        d = torch.randn(7, 33, dtype=torch.float64)
        t = d.shape[0]
        ref = 0.0
        for i in range(t - 1):
            for j in range(i + 1, t):
                cos = float(d[i] @ d[j]) / max(float(d[i].norm() * d[j].norm()), 1e-8)
                ref += max(0.0, PI / 2 - math.acos(cos))
        ref *= 2 / (t * (t - 1))
        assert directional_decoupled_loss(d).item() == pytest.approx(ref, rel=1e-12)

    def test_zero_prompt_uses_eps(self) -> None:
        d = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # cos = 0 / eps = 0: 90 degrees, no loss
        assert directional_decoupled_loss(d).item() == 0.0

    def test_levels_are_summed_and_prompt_maps_flattened(self) -> None:
        a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # pi/4
        b = torch.ones(2, 3, 1, 1)  # identical: pi/2
        assert directional_decoupled_loss([a, b]).item() == pytest.approx(3 * PI / 4, abs=1e-6)


class TestGradientsAndTypes:
    def test_gradients_reach_the_prompts_and_open_the_angle(self) -> None:
        d = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1]], requires_grad=True)
        directional_decoupled_loss(d).backward()
        assert d.grad is not None and torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
        with torch.no_grad():  # a gradient step widens the angle
            before = _angles_deg(d)
            after = _angles_deg(d - 0.1 * d.grad)
        assert after.item() > before.item() + 1.0

    def test_nearly_parallel_prompts_have_finite_gradients(self) -> None:
        d = torch.tensor([[1.0, 0.0], [1.0, 1e-6]], requires_grad=True)
        directional_decoupled_loss(d).backward()
        assert torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0

    def test_dtypes_and_autocast(self) -> None:
        d = torch.randn(5, 16)
        ref = directional_decoupled_loss(d.double())
        assert ref.dtype == torch.float64
        out32 = directional_decoupled_loss(d)
        assert out32.dtype == torch.float32
        assert out32.item() == pytest.approx(ref.item(), abs=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_ac = directional_decoupled_loss(d)
        assert out_ac.dtype == torch.float32 and out_ac.item() == pytest.approx(ref.item(), abs=1e-5)
        out_bf = directional_decoupled_loss(d.bfloat16())
        assert out_bf.dtype == torch.float32 and out_bf.item() == pytest.approx(ref.item(), abs=0.02)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="at least two prompts"):
            directional_decoupled_loss(torch.randn(1, 4))
        with pytest.raises(ValueError, match="no prompts"):
            directional_decoupled_loss([])
        with pytest.raises(ValueError, match="form"):
            directional_decoupled_loss(torch.randn(2, 4), form="sine")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="degrees"):
            DirectionalDecoupledLoss(threshold=200.0)
        with pytest.raises(ValueError, match="threshold must be 90"):
            directional_decoupled_loss(torch.randn(2, 4), form="abs_cosine", threshold=60.0)

    @pytest.mark.parametrize("form", ["cosine_hinge", "abs_cosine"])
    def test_cosine_forms_have_finite_gradients_that_open_the_angle(self, form: str) -> None:
        d = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1]], requires_grad=True)
        directional_decoupled_loss(d, form=form).backward()
        assert d.grad is not None and torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
        with torch.no_grad():
            assert _angles_deg(d - 0.5 * d.grad).item() > _angles_deg(d).item() + 1.0


class TestModelHelpers:
    def test_collect_and_module(self) -> None:
        model = create_model("pip_restormer", **TINY["pip_restormer"])
        prompts = collect_degradation_prompts(model)
        assert [tuple(p.shape) for p in prompts] == [(5, 8), (5, 8), (5, 16)]
        assert prompts[0].data_ptr() == model.prompt1.detask_prompt_param.data_ptr()  # a view
        ddl = DirectionalDecoupledLoss()
        assert ddl.alpha == DEFAULT_DDL_ALPHA == 0.002
        expected = sum(directional_decoupled_loss(p) for p in prompts)
        torch.testing.assert_close(ddl(model), expected)
        ddl(model).backward()
        params = [
            model.prompt1.detask_prompt_param,
            model.prompt2.detask_prompt_param,
            model.prompt3.detask_prompt_param,
        ]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        assert collect_degradation_prompts(nn.Linear(2, 2)) == []


class _TinyUNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, w, 3, padding=1)
        self.skip = nn.Identity()
        self.down = nn.Conv2d(w, 2 * w, 2, stride=2)
        self.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.out = nn.Conv2d(2 * w, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.gelu(self.enc(x))
        return x + self.out(torch.cat([self.up(F.gelu(self.down(e))), self.skip(e)], 1))


def _train_tiny_pip(alpha: float, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a tiny PIP U-Net on five toy noise levels with the recipe the PIP family declares (its
    ``ddl`` term weighted ``alpha``); return the d prompts' angles before and after."""
    torch.manual_seed(0)
    model = PIPUNet(_TinyUNet(), skips={"skip": 8}, prompt_dims=(16,), prompt_sizes=8, p2f_heads=2,
                    pad_multiple=2, classifier=False)  # fmt: skip
    (d,) = collect_degradation_prompts(model)
    with torch.no_grad():  # start from nearly parallel prompts (about 20-45 degrees apart)
        d.copy_(torch.randn(16) + 0.3 * torch.randn_like(d))
    before = _angles_deg(d)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(5)
    (term,) = model.auxiliary_losses()  # classifier=False: the directional decoupled loss only
    assert (term.name, term.weight) == ("ddl", DEFAULT_DDL_ALPHA)
    for _ in range(steps):
        clean = torch.rand(5, 3, 8, 8, generator=gen)
        noisy = clean + 0.05 * (labels.view(-1, 1, 1, 1) + 1) * torch.randn(clean.shape, generator=gen)
        batch = {"degraded": noisy, "clean": clean, "label": labels}
        out, extras = model.split_training_output(model(noisy, **model.training_forward_kwargs(batch)))
        loss = F.l1_loss(out, clean) + alpha * term.fn(model, batch, extras)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, _angles_deg(d)


def test_training_with_ddl_decouples_the_degradation_prompts() -> None:
    before, after = _train_tiny_pip(DEFAULT_DDL_ALPHA)
    _, control = _train_tiny_pip(0.0)
    # figures at the time of writing: min/mean angle 17.2/23.2 deg before; 40 steps with DDL about
    # 67/92 deg, without DDL about 18/24 deg
    assert before.min() < 25 and before.mean() < 35
    assert after.min() > 60 and after.mean() > 80  # pairwise angles grew towards the 90 deg threshold
    assert after.mean() > control.mean() + 25  # and it is the loss that separates them
