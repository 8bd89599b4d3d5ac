"""Self-refining diffusion's per-pixel sampler: the FAM as a fixed, time-constant noise scale g = 1 ± w_n·FAM.

The model of the consistent target predicts g⊙ε, so it samples from x_T ~ N(0, g²) with per-pixel DDIM steps
(the fixed-map mode of ``importance_ddim_sample``); the reference target keeps plain DDIM.
"""

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from torch import nn

from callbacks import SelfRefiningDiffusion
from xai_train.config import ConfigError, load_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.diffusion.importance_schedule import NoiseScaleSchedule, TimeConstantScale, check_step_variance
from xai_train.diffusion.models import build_noise_scheduler, build_unet, ddim_for
from xai_train.diffusion.pipeline import FixedMapDiffusionPipeline, export_pipeline, load_pipeline, sample_pipeline
from xai_train.diffusion.sampler import ddim_sample, importance_ddim_sample
from xai_train.diffusion.samplers import FixedMapSampler

REPO = Path(__file__).resolve().parents[2]
SRD_DIGITS = REPO / "configs" / "diffusion" / "srd_digits.yaml"
CONSISTENT = ["self_refine.preset=custom", "self_refine.target=consistent"]


def to_numpy_images(samples: torch.Tensor) -> np.ndarray:
    """What ``sample_pipeline`` returns for (B, C, H, W) samples in [-1, 1]."""
    return (samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


class FirstInput(nn.Module):
    """A UNet stand-in that predicts zero noise and keeps every input, so x_T can be read back."""

    def __init__(self, size: int, channels: int = 1):
        super().__init__()
        self.config = SimpleNamespace(sample_size=size, in_channels=channels)
        self.unused = nn.Parameter(torch.zeros(()))  # the sampler reads the device from a parameter
        self.inputs: list[torch.Tensor] = []

    def forward(self, sample, timestep):
        self.inputs.append(sample.clone())
        return SimpleNamespace(sample=torch.zeros_like(sample))


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(
    ("fam", "weight", "direction"),
    [("zero", 0.01, "amplify"), ("random", 0.0, "amplify"), ("zero", 0.5, "protect")],
)
def test_zero_fam_or_zero_weight_samples_as_plain_ddim(unet, fam, weight, direction, eta):
    fam = (
        torch.zeros(1, 1, 8, 8) if fam == "zero" else torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    )
    scheduler = DDIMScheduler(num_train_timesteps=100)  # clip_sample=True, as the recipe's DDPM config
    plain = ddim_sample(unet, scheduler, 3, 5, torch.Generator().manual_seed(1), eta=eta)
    out = importance_ddim_sample(
        unet, scheduler, fam, TimeConstantScale(weight, direction), 3, 5, torch.Generator().manual_seed(1), eta=eta
    )
    torch.testing.assert_close(out.images, plain, rtol=1e-5, atol=1e-5)
    assert out.clamped_fraction == 0.0 and torch.equal(out.noise_scale, torch.ones(3, 1, 8, 8))


def test_without_a_map_the_sampler_is_plain_ddim_bit_for_bit(unet):
    sampler = FixedMapSampler(lambda: None, TimeConstantScale(0.01))
    ours = sampler(unet, DDIMScheduler(num_train_timesteps=100), 2, 4, torch.Generator().manual_seed(7))
    assert torch.equal(
        ours, ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), 2, 4, torch.Generator().manual_seed(7))
    )


@pytest.mark.parametrize(("weight", "direction"), [(1.0, "amplify"), (0.5, "protect")])
def test_x_T_has_the_per_pixel_std_of_the_forward_process(weight, direction):
    """x_T = g ⊙ z with the generator's first draw z, so its per-pixel std over 4,000 samples is g (to 6%)."""
    fam = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    g = TimeConstantScale(weight, direction).scale(fam)
    model = FirstInput(4)
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    importance_ddim_sample(
        model, scheduler, fam, TimeConstantScale(weight, direction), 4000, 2, torch.Generator().manual_seed(0)
    )
    x_T = model.inputs[0]
    assert torch.equal(x_T, g * torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    std = x_T.std(dim=0, keepdim=True)
    # The standard error of a std from n = 4000 normal draws is std/√(2n) ≈ 1.1%: 6% is > 5 of them.
    torch.testing.assert_close(std, g, rtol=0.06, atol=0)
    assert float(g.max() / g.min()) == pytest.approx(2.0)  # the map spans a factor 2 of noise, so this tells


def test_every_step_uses_the_fams_scale(unet):
    """A hand-written loop with g_t = g_r = 1 + w·FAM and diffusers' ᾱ gives the same samples."""
    fam = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = 1 + 0.4 * fam
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    out = importance_ddim_sample(unet, scheduler, fam, TimeConstantScale(0.4), 2, 4, torch.Generator().manual_seed(2))
    sample = g * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    alphas = scheduler.alphas_cumprod
    with torch.no_grad():
        for t in [75, 50, 25, 0]:
            a_t, a_r = alphas[t], (alphas[t - 25] if t >= 25 else torch.tensor(1.0))
            n_hat = unet(sample, torch.full((2,), t)).sample
            x0_hat = (sample - (1 - a_t).sqrt() * n_hat) / a_t.sqrt()
            sample = a_r.sqrt() * x0_hat + (1 - a_r).sqrt() * g * (n_hat / g)
    torch.testing.assert_close(out.images, sample, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.importance, fam.expand(2, 1, 8, 8))


def test_the_exported_pipeline_carries_the_fam_and_samples_as_in_memory(tmp_path):
    torch.manual_seed(0)
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    fam = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sampler = FixedMapSampler(lambda: fam, TimeConstantScale(0.3, "protect"), eta=0.5)
    export_pipeline(tmp_path / "pipeline", unet, scheduler, sampler)
    files = sorted(str(p.relative_to(tmp_path / "pipeline")) for p in (tmp_path / "pipeline").rglob("*.*"))
    assert "fixed_map/diffusion_pytorch_model.safetensors" in files  # next to the UNet's weights
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]  # nothing that loads by unpickling
    pipe = load_pipeline(tmp_path / "pipeline")
    assert isinstance(pipe, FixedMapDiffusionPipeline)
    assert torch.equal(pipe.fixed_map.importance, fam)
    assert (pipe.config.noise_weight, pipe.config.direction) == (0.3, "protect")
    loaded = sample_pipeline(pipe, 3, num_inference_steps=4, seed=9, eta=0.5)
    in_memory = sampler(unet, ddim_for(scheduler), 3, 4, torch.Generator().manual_seed(9))
    np.testing.assert_array_equal(loaded, to_numpy_images(in_memory))
    plain = sample_pipeline(DDPMPipeline(unet=unet, scheduler=scheduler), 3, num_inference_steps=4, seed=9, eta=0.5)
    assert np.abs(loaded - plain).max() > 1e-3  # the map matters
    # plain diffusers: the UNet alone loads as a standard UNet2DModel, the whole pipeline through our class
    alone = UNet2DModel.from_pretrained(tmp_path / "pipeline", subfolder="unet").state_dict()
    assert all(torch.equal(alone[name], value) for name, value in unet.state_dict().items())
    by_class = FixedMapDiffusionPipeline.from_pretrained(tmp_path / "pipeline", use_safetensors=True)
    assert torch.equal(by_class.fixed_map.importance, fam)


def test_a_run_that_never_made_a_fam_exports_a_plain_ddpm_pipeline(tmp_path):
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    export_pipeline(tmp_path / "pipeline", unet, scheduler, FixedMapSampler(lambda: None, TimeConstantScale(0.01)))
    assert isinstance(DDPMPipeline.from_pretrained(tmp_path / "pipeline"), DDPMPipeline)


def test_the_variance_check_refuses_a_map_or_weight_without_noise(unet):
    scheduler = DDIMScheduler(num_train_timesteps=100)
    bad_maps = {
        "values must lie in \\[0, 1\\]": torch.full((1, 1, 8, 8), 2.0),  # protect 0.5: g = 0, no step variance
        "NaN or infinite": torch.full((1, 1, 8, 8), float("nan")),
        "differs from the UNet's": torch.zeros(1, 1, 4, 4),
        "does not fit 2 images": torch.zeros(3, 1, 8, 8),
    }
    for message, bad in bad_maps.items():
        with pytest.raises(ValueError, match=message):
            importance_ddim_sample(unet, scheduler, bad, TimeConstantScale(0.5, "protect"), 2, 2)
    with pytest.raises(ValueError, match="needs 0 <= noise_weight < 1"):
        TimeConstantScale(1.0, "protect")  # g = 0 where FAM = 1
    with pytest.raises(ValueError, match="finite number >= 0"):
        TimeConstantScale(-0.1)


def test_the_variance_check_of_a_fixed_map_has_the_known_minimum():
    """g constant in t: the step variance is g²·(1 − ᾱ_t/ᾱ_r) (≈ g²·β_t for r = t − 1), least at g = 0.5, t = 1."""
    alphas = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    report = check_step_variance(TimeConstantScale(0.5, "protect"), alphas)
    assert report.ok and (report.timestep, report.prev_timestep, report.importance) == (1, 0, 1.0)
    alphas = alphas.double()
    assert report.min_variance == pytest.approx(0.25 * float(1 - alphas[1] / alphas[0]), rel=1e-9)


def test_a_fixed_map_with_a_violating_schedule_is_warned_and_clamped(unet):
    """Negative sharpness with a constant small λ: g_r outgrows g_t around t = T/2 (step variance < 0 at s ≈ 0.15)."""
    schedule = NoiseScaleSchedule(100, sharpness=-20.0, lambda_min=0.01, lambda_max=0.01)
    fam = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = importance_ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), fam, schedule, 2, 10)
    messages = [str(w.message) for w in caught]
    assert any("step variance" in m and "the sampler will clamp" in m for m in messages)
    assert any("lowered g_r" in m for m in messages)
    assert 0 < out.clamped_fraction < 1 and torch.isfinite(out.images).all()


def test_config_chooses_the_sampler_and_refuses_per_pixel_for_the_reference_target():
    def sampler_of(*overrides):
        return load_config(DiffusionExperiment, SRD_DIGITS, list(overrides)).self_refine.resolved_sampler()

    assert sampler_of() == "plain"  # preset reference: the authors sample plainly
    assert sampler_of(*CONSISTENT) == "per_pixel"
    assert sampler_of(*CONSISTENT, "self_refine.sampler=plain") == "plain"
    assert sampler_of(*CONSISTENT, "self_refine.fam_reduce=per_sample") == "plain"  # no single FAM
    with pytest.raises(ConfigError, match="predicts the un-amplified ε.*set sampler=plain"):
        load_config(DiffusionExperiment, SRD_DIGITS, ["self_refine.sampler=per_pixel"])
    with pytest.raises(ConfigError, match="no single FAM to sample with; set sampler=plain"):
        load_config(
            DiffusionExperiment,
            SRD_DIGITS,
            [*CONSISTENT, "self_refine.fam_reduce=per_sample", "self_refine.sampler=per_pixel"],
        )


def test_the_callbacks_sampler_reads_the_current_fam(unet):
    callback = SelfRefiningDiffusion(
        lambda n, steps, g: torch.zeros(n, 1, 8, 8), torch.zeros(4, 1, 8, 8), target="consistent", noise_weight=0.2
    )
    sampler = callback.sampler()
    scheduler = DDIMScheduler(num_train_timesteps=100)
    before = sampler(unet, scheduler, 2, 3, torch.Generator().manual_seed(0))
    assert torch.equal(before, ddim_sample(unet, scheduler, 2, 3, torch.Generator().manual_seed(0)))  # base phase
    callback.fam = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    after = sampler(unet, scheduler, 2, 3, torch.Generator().manual_seed(0))
    expected = importance_ddim_sample(
        unet, scheduler, callback.fam, TimeConstantScale(0.2), 2, 3, torch.Generator().manual_seed(0)
    ).images
    assert torch.equal(after, expected)
    reference = SelfRefiningDiffusion(lambda n, steps, g: torch.zeros(n, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="target='reference'.*plain DDIM"):
        reference.sampler()
