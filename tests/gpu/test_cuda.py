"""CUDA paths (``-m gpu``): each result on the GPU equals the same computation on the CPU.

Skipped without CUDA; ``scripts/device_check.sh`` runs them on a GPU machine. TF32 is switched off for
the comparisons, so fp32 on the GPU must agree with the CPU to float rounding (cuDNN picks other
algorithms, hence the tolerances); bf16 is compared with fp32 at bf16's precision.
"""

from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState, PartialState
from torch import nn

from callbacks import ImportanceWeightedLoss, XAIGradientMask
from xai_train.benchmarks import make_diffusion_arm, make_gan_arm, one_step, step_fn
from xai_train.config.diffusion import DiscriminatorConfig
from xai_train.config.gan import GANTrainConfig
from xai_train.explain import attribute

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (scripts/device_check.sh runs these)"),
]


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 in matmuls/convolutions during a test (its 10-bit mantissa would dominate the comparison)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fresh_accelerate_state() -> None:
    """Accelerate's state is a process-wide singleton: a CPU run and a CUDA run in one test each need a fresh one."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def digits_like(n: int = 64, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def gan_losses(cpu: bool, mixed_precision: str = "no", callbacks=(), steps: int = 3) -> tuple[list[dict], nn.Module]:
    fresh_accelerate_state()
    options = {"g_width": 16, "d_width": 16}
    train = GANTrainConfig(batch_size=16, mixed_precision=mixed_precision)
    arm = make_gan_arm("dcgan", digits_like(), train, callbacks=list(callbacks), model_options=options, cpu=cpu)
    losses = []
    for _ in range(steps):
        stats = arm.train_step()
        arm.state.step += 1
        losses.append({key: value.float().item() for key, value in stats.items() if key in ("d_loss", "g_loss")})
    return losses, arm


def test_gan_trainer_runs_on_cuda_in_fp32_and_matches_the_cpu():
    cpu_losses, _ = gan_losses(cpu=True)
    cuda_losses, arm = gan_losses(cpu=False)
    assert arm.accelerator.device.type == "cuda"
    assert all(p.is_cuda for p in arm.generator.parameters())
    for cpu_step, cuda_step in zip(cpu_losses, cuda_losses, strict=True):
        for key in ("d_loss", "g_loss"):
            assert cuda_step[key] == pytest.approx(cpu_step[key], rel=1e-3, abs=1e-4), key


def test_gan_trainer_runs_on_cuda_in_bf16_close_to_fp32():
    fp32, _ = gan_losses(cpu=False)
    bf16, arm = gan_losses(cpu=False, mixed_precision="bf16")
    assert arm.accelerator.mixed_precision == "bf16"
    # bf16 keeps 8 bits of mantissa: the first step's losses agree to ~1%; later steps drift apart.
    assert bf16[0]["d_loss"] == pytest.approx(fp32[0]["d_loss"], rel=3e-2)
    assert bf16[0]["g_loss"] == pytest.approx(fp32[0]["g_loss"], rel=3e-2)
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in bf16)


def test_xai_gradient_mask_on_cuda_matches_the_cpu():
    cpu_losses, cpu_arm = gan_losses(cpu=True, callbacks=[XAIGradientMask("saliency")], steps=2)
    cuda_losses, cuda_arm = gan_losses(cpu=False, callbacks=[XAIGradientMask("saliency")], steps=2)
    cpu_mask, cuda_mask = cpu_arm.callbacks.callbacks[0].last_mask, cuda_arm.callbacks.callbacks[0].last_mask
    assert cuda_mask.is_cuda
    torch.testing.assert_close(cuda_mask.cpu(), cpu_mask, rtol=1e-3, atol=1e-4)
    assert cuda_losses[-1]["g_loss"] == pytest.approx(cpu_losses[-1]["g_loss"], rel=1e-3, abs=1e-4)


class SmallD(nn.Module):
    """conv -> LeakyReLU -> conv -> LeakyReLU -> linear, every non-linearity a module (DeepLift-exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 1))

    @property
    def feature_layer(self) -> nn.Module:
        return self.body[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("saliency", {}),
        ("input_x_gradient", {}),
        ("deeplift", {}),
        ("deeplift_shap", {"baselines": digits_like(6, 16)}),
        ("integrated_gradients", {"n_steps": 8}),
        ("gradcam", {}),
    ],
)
def test_attribute_on_cuda_equals_the_cpu(method, options):
    torch.manual_seed(0)
    discriminator = SmallD()
    images = digits_like(4, 16)
    on_cpu = attribute(discriminator, images, method, **options)
    cuda_options = {key: value.cuda() if torch.is_tensor(value) else value for key, value in options.items()}
    on_cuda = attribute(discriminator.cuda(), images.cuda(), method, **cuda_options)
    assert on_cuda.is_cuda
    scale = on_cpu.abs().max().item()
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-3, atol=1e-5 * max(scale, 1.0))


def test_diffusion_step_on_cuda_matches_the_cpu():
    def run(cpu: bool) -> tuple[list[float], object]:
        fresh_accelerate_state()
        arm = make_diffusion_arm(
            digits_like(32, 16),
            batch_size=8,
            block_out_channels=(16, 32),
            discriminator=DiscriminatorConfig(enabled=True, buffer_refresh_size=8, sample_steps=2),
            callbacks=lambda alphas, _: [ImportanceWeightedLoss(start_step=0)],
            cpu=cpu,
        )
        step = step_fn(arm)
        losses = []
        for _ in range(2):
            step()
        losses.append(arm.train_step()["loss"].float().item())
        return losses, arm

    cpu_losses, _ = run(cpu=True)
    cuda_losses, arm = run(cpu=False)
    assert arm.accelerator.device.type == "cuda"
    assert all(p.is_cuda for p in arm.unet.parameters())
    assert cuda_losses[0] == pytest.approx(cpu_losses[0], rel=1e-2)


def test_benchmark_arms_time_on_cuda():
    """The benchmark's timing synchronises around each step and records the arm's peak GPU memory."""
    from xai_train.benchmarks import time_interleaved

    arm = make_gan_arm(
        "dcgan", digits_like(), GANTrainConfig(batch_size=16), model_options={"g_width": 16, "d_width": 16}
    )
    timings = time_interleaved({"vanilla": one_step(arm)}, steps=2, warmup=1, device=arm.accelerator.device)
    assert len(timings["vanilla"].times) == 2
    assert timings["vanilla"].peak_mb > 0
