"""Explanations, DeepLift's check and R1 run in fp32 even through a D that ``accelerator.prepare`` autocasts.

CPU bf16 autocast reproduces what a GPU run does: the prepared D's forward computes in bf16 (8-bit mantissa).
Tolerance of every comparison with fp32: |prepared - fp32| <= RTOL * max|fp32| + ATOL, RTOL = 1e-5 and
ATOL = 1e-7 — fp32 rounding only. A bf16 forward misses by ~1e-2 relative (checked below as a control),
three orders of magnitude more, so these tests fail if any explainer computes through the autocast wrapper.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from captum.attr import Saliency
from torch import nn

from callbacks import SelfRefiningDiffusion
from xai_train.callback import CallbackList, TrainState
from xai_train.diffusion import TimeConditionedDiscriminator
from xai_train.diffusion.adversary import Adversary
from xai_train.diffusion.discriminator import r1_penalty
from xai_train.diffusion.models import build_unet
from xai_train.explain import METHODS, ScoreModel, all_cams, attribute, cam, check_deeplift
from xai_train.explain.cams import CAM_METHODS
from xai_train.explain.precision import explanation_dtype, full_precision, is_autocast_patched, unscale_or_skip
from xai_train.trainers.losses import discriminator_loss

RTOL, ATOL = 1e-5, 1e-7
REAL = torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(7)).clamp(-1, 1)
OPTIONS = {
    "deeplift_shap": {"baselines": REAL, "n_baselines": 4},
    "gradient_shap": {"baselines": REAL},
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 4},
    "lime": {"n_samples": 48, "patch": 4},
    "kernel_shap": {"n_samples": 48, "patch": 4},
}


def seed(value: int) -> None:
    """captum draws GradientShap's baselines with numpy, the rest with torch."""
    torch.manual_seed(value)
    np.random.seed(value)


def assert_close_to_fp32(got: torch.Tensor, fp32: torch.Tensor, what: str) -> None:
    assert got.dtype == torch.float32, what
    error = (got - fp32).abs().max().item()
    bound = RTOL * fp32.abs().max().item() + ATOL
    assert error <= bound, f"{what}: off by {error:.3g} (allowed {bound:.3g})"


@pytest.fixture
def bf16(fresh_accelerate_state) -> Accelerator:
    return Accelerator(cpu=True, mixed_precision="bf16")


@pytest.fixture
def pair(conv_d, bf16):
    """(the fp32 D, a prepared copy whose forward autocasts to bf16)."""
    prepared = bf16.prepare(copy.deepcopy(conv_d))
    assert is_autocast_patched(prepared)
    return conv_d, prepared


def test_the_prepared_forward_really_computes_in_bf16(pair, images):
    """The control: without the fp32 path the gap is far above the tests' tolerance."""
    fp32, prepared = pair
    fp32.eval(), prepared.eval()
    reference = Saliency(ScoreModel(fp32)).attribute(images.clone().requires_grad_(True), abs=False)
    through_autocast = Saliency(ScoreModel(prepared)).attribute(images.clone().requires_grad_(True), abs=False)
    gap = (through_autocast - reference).abs().max() / reference.abs().max()
    assert gap > 100 * RTOL
    with full_precision(prepared):
        exact = Saliency(ScoreModel(prepared)).attribute(images.clone().requires_grad_(True), abs=False)
    assert_close_to_fp32(exact, reference, "saliency in full_precision")
    assert is_autocast_patched(prepared)  # the wrapper is back after the block


@pytest.mark.parametrize("method", list(METHODS))
def test_every_explainer_through_a_bf16_prepared_d_equals_fp32(method, pair, images, bf16):
    fp32, prepared = pair
    options = OPTIONS.get(method, {})
    seed(3)
    reference = attribute(fp32, images, method, **options)
    seed(3)
    assert_close_to_fp32(attribute(prepared, images, method, **options), reference, method)
    seed(3)
    with bf16.autocast():  # a caller already inside autocast changes nothing either
        inside = attribute(prepared, images, method, **options)
    assert_close_to_fp32(inside, reference, f"{method} inside accelerator.autocast()")


def test_bf16_fakes_are_explained_in_fp32(pair, images):
    fp32, prepared = pair
    got = attribute(prepared, images.bfloat16(), "integrated_gradients", n_steps=8)
    assert_close_to_fp32(got, attribute(fp32, images.bfloat16().float(), "integrated_gradients", n_steps=8), "ig")


@pytest.mark.parametrize("name", ["gradcam", *CAM_METHODS])
def test_every_cam_through_a_bf16_prepared_d_equals_fp32(name, pair, images):
    fp32, prepared = pair
    seed(5)
    reference = cam(fp32, images, name)
    seed(5)
    assert_close_to_fp32(cam(prepared, images, name), reference, name)


def test_all_cams_through_a_bf16_prepared_d_equal_fp32(pair, images):
    fp32, prepared = pair
    reference, got = all_cams(fp32, images), all_cams(prepared, images)
    for name in reference:
        assert_close_to_fp32(got[name], reference[name], name)


def test_deeplift_check_passes_through_a_bf16_prepared_d(pair, images):
    _, prepared = pair
    check_deeplift(ScoreModel(prepared.eval()), images)  # the benchmark's failure: off by 1.1e-4 in bf16


class AutocastInsideD(nn.Module):
    """A D that autocasts inside its own forward: nothing outside can make it compute in fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 16, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.head = nn.Linear(16 * 16 * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.head(self.act(self.conv(x * 3)).flatten(1)).float()


def test_deeplift_blames_precision_not_the_architecture_when_d_computes_in_bf16(images):
    torch.manual_seed(0)
    model = ScoreModel(AutocastInsideD().eval())
    with pytest.raises(ValueError) as error:
        check_deeplift(model, images, torch.full_like(images, 0.9))
    message = str(error.value)
    assert "reduced precision" in message and "torch.bfloat16" in message
    assert "cannot see" not in message and "elementary ops" not in message


def test_explanation_dtype_follows_the_parameters():
    assert explanation_dtype(nn.Linear(2, 1)) == torch.float32
    assert explanation_dtype(nn.Linear(2, 1).double()) == torch.float64
    assert explanation_dtype(nn.Linear(2, 1).bfloat16()) == torch.bfloat16  # cannot take fp32 inputs


def test_r1_is_computed_in_fp32_under_a_bf16_prepared_discriminator(bf16):
    torch.manual_seed(0)
    d = TimeConditionedDiscriminator(1, channels=(8, 16))
    fp32 = copy.deepcopy(d)
    prepared, optimizer = bf16.prepare(d, torch.optim.SGD(d.parameters(), lr=0.0))
    adversary = Adversary(prepared, optimizer, discriminator_loss, "x0_hat", r1_gamma=1.0, r1_every=1)
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(4, 1, 16, 16, generator=gen), torch.randn(4, 1, 16, 16, generator=gen)
    t = torch.tensor([3, 10, 40, 90])
    adversary.update(TrainState(bf16), CallbackList([]), real, fake, t)
    x = real.clone().requires_grad_(True)
    expected = r1_penalty(fp32(torch.cat([x, fake]), torch.cat([t, t]))[:4], x)
    assert adversary.last_r1.dtype == torch.float32
    assert adversary.last_r1.item() == pytest.approx(expected.item(), rel=RTOL, abs=ATOL)
    # the control: the same penalty through the autocast wrapper differs far beyond that tolerance
    x = real.clone().requires_grad_(True)
    through_autocast = r1_penalty(prepared(torch.cat([x, fake]), torch.cat([t, t]))[:4].float(), x)
    assert abs(through_autocast.item() - expected.item()) > 100 * RTOL * expected.item()


# --- fp16 + GradScaler: SRD's projection optimizer ------------------------------------------------------
# Accelerate 1.15 has no fp16 autocast/GradScaler on the CPU (accelerator.scaler is None there), so the test
# gives the accelerator a real torch.amp.GradScaler("cpu") and backpropagates a scaled loss through it, as
# accelerator.backward does on a GPU; a huge loss makes the scaled gradients overflow to inf.


@pytest.fixture
def srd_with_scaler(fresh_accelerate_state):
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    torch.manual_seed(0)
    unet = build_unet(16, 1, (16, 32))
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    callback = SelfRefiningDiffusion(lambda n, s, g: images[:n], images, first_process=0, highlighter_width=4)
    state = TrainState(accelerator, models={"unet": unet})
    callback.on_train_start(state)
    callback.attention.fam = torch.ones(1, 1, 16, 16)
    return callback, state


def scaled_backward(callback, state, factor: float) -> list[torch.Tensor]:
    params = list(callback.attention.projections.parameters())
    true_grads = [torch.full_like(p, 0.5 * factor) for p in params]
    loss = sum((p * g).sum() for p, g in zip(params, true_grads, strict=True))
    state.accelerator.scaler.scale(loss).backward()
    return true_grads


def test_srd_projection_step_uses_unscaled_gradients(srd_with_scaler):
    callback, state = srd_with_scaler
    true_grads = scaled_backward(callback, state, 1.0)
    callback.on_before_optimizer_step(state, "denoiser")
    params = list(callback.attention.projections.parameters())
    for p, g in zip(params, true_grads, strict=True):
        exp_avg = callback.projection_optimizer.state[p]["exp_avg"]  # (1 - beta1) * the gradient it stepped on
        torch.testing.assert_close(exp_avg, 0.1 * g, rtol=1e-6, atol=0.0)
    assert callback.projection_overflows == 0


def test_srd_projection_overflow_step_is_skipped_and_stays_finite(srd_with_scaler):
    callback, state = srd_with_scaler
    before = [p.detach().clone() for p in callback.attention.projections.parameters()]
    scaled_backward(callback, state, 1e36)  # 0.5e36 * 2**16 overflows fp32
    assert any(not torch.isfinite(p.grad).all() for p in callback.attention.projections.parameters())
    callback.on_before_optimizer_step(state, "denoiser")
    after = list(callback.attention.projections.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert all(p.grad is None for p in after)
    assert callback.projection_overflows == 1
    assert not callback.projection_optimizer.state  # no moment was written from the inf gradients


def test_unscale_or_skip_without_a_scaler_only_checks():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    assert unscale_or_skip([p], None) and p.grad.tolist() == [1.0, 2.0, 3.0]
    p.grad = torch.tensor([1.0, float("nan"), 3.0])
    assert not unscale_or_skip([p], None) and p.grad is None
