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


# --- mixed precision and devices (issue 18) ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("saliency", {}),
        ("deeplift", {}),
        ("integrated_gradients", {"n_steps": 8}),
        ("gradient_shap", {"baselines": digits_like(6, 16)}),
        ("gradcam", {}),
        ("layercam", {}),
    ],
)
def test_explainers_through_a_bf16_prepared_d_on_cuda_equal_fp32(method, options):
    """accelerate's bf16 autocast wrapper is bypassed: the same fp32 kernels run (cuDNN may pick others)."""
    from accelerate import Accelerator

    fresh_accelerate_state()
    torch.manual_seed(0)
    reference_d = SmallD().cuda()
    prepared = Accelerator(mixed_precision="bf16").prepare(SmallD().cuda())
    prepared.load_state_dict(reference_d.state_dict())
    images = digits_like(4, 16).cuda()
    torch.manual_seed(1)
    reference = attribute(reference_d, images, method, **options)
    torch.manual_seed(1)
    got = attribute(prepared, images, method, **options)  # CPU baselines: moved to CUDA by attribute
    assert got.is_cuda and got.dtype == torch.float32
    scale = reference.abs().max().item()
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-6 * max(scale, 1.0))


def test_gradient_shap_with_cpu_dataset_baselines_on_cuda_equals_cuda_baselines():
    torch.manual_seed(0)
    discriminator = SmallD().cuda()
    images, baselines = digits_like(4, 16).cuda(), digits_like(8, 16)  # dataset.images stay on the CPU
    torch.manual_seed(2)
    from_cpu = attribute(discriminator, images, "gradient_shap", baselines=baselines)
    torch.manual_seed(2)
    from_cuda = attribute(discriminator, images, "gradient_shap", baselines=baselines.cuda())
    assert from_cpu.is_cuda
    torch.testing.assert_close(from_cpu, from_cuda, rtol=0.0, atol=0.0)


def test_gan_fp16_grad_scaler_steps_stay_finite_with_an_explainer():
    losses, arm = gan_losses(cpu=False, mixed_precision="fp16", callbacks=[XAIGradientMask("deeplift")], steps=3)
    assert arm.accelerator.scaler is not None
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    assert all(torch.isfinite(p).all() for p in arm.generator.parameters())


def test_srd_projections_stay_finite_through_an_fp16_overflow_step():
    from callbacks import SelfRefiningDiffusion

    fresh_accelerate_state()
    images, box = digits_like(32, 16), []
    callback = SelfRefiningDiffusion(
        lambda n, steps, generator: box[0].sample(n, steps, generator), images, first_process=0, fam_cycle=100,
        num_samples=4, sample_steps=2, highlighter_samples=8, highlighter_epochs=1, highlighter_width=4,
    )  # fmt: skip
    arm = make_diffusion_arm(
        images, batch_size=8, block_out_channels=(16, 32), mixed_precision="fp16", callbacks=lambda a, _: [callback]
    )
    box.append(arm)
    arm.callbacks.on_train_start(arm.state)
    step = step_fn(arm)
    step()  # trains the highlighter, makes the FAM, steps the projections on unscaled gradients
    arm.accelerator.scaler.update(new_scale=2.0**127)  # the next backward overflows for sure
    before = [p.detach().clone() for p in callback.attention.projections.parameters()]
    step()
    after = list(callback.attention.projections.parameters())
    assert callback.projection_overflows >= 1
    assert all(torch.isfinite(p).all() for p in after)
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_gan_resume_on_cuda_keeps_the_ema_on_the_gpu(tmp_path):
    from xai_train.models import build_gan
    from xai_train.trainers import GANTrainer

    def trainer(max_steps: int) -> GANTrainer:
        fresh_accelerate_state()
        torch.manual_seed(0)
        generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        config = GANTrainConfig(
            batch_size=8, max_steps=max_steps, ema_decay=0.9, sample_every=0, checkpoint_every=1, log_every=1
        )
        return GANTrainer(generator, discriminator, digits_like(), config, run_dir=tmp_path, resume="auto")

    trainer(2).train()
    resumed = trainer(4)
    assert resumed.train()["steps"] == 4  # ema.step after the resume would fail on mixed devices
    assert all(p.is_cuda for p in resumed.ema.shadow_params)
