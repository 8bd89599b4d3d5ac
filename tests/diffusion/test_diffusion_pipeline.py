import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from xai_train.diffusion import (
    DiscriminatorImportance,
    ImportanceSampler,
    NoiseScaleSchedule,
    TimeConditionedDiscriminator,
    ddim_sample,
)
from xai_train.diffusion.importance_schedule import TimeConstantScale
from xai_train.diffusion.models import build_noise_scheduler, build_unet, ddim_for
from xai_train.diffusion.pipeline import ImportanceDiffusionPipeline, export_pipeline, load_pipeline, sample_pipeline


def test_standard_export_loads_in_diffusers_and_samples(tmp_path):
    torch.manual_seed(0)
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    export_pipeline(tmp_path / "pipeline", unet, scheduler)
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 8, 8, 1) and np.isfinite(images.images).all()
    ours = sample_pipeline(load_pipeline(tmp_path / "pipeline"), 2, num_inference_steps=4, seed=5)
    expected = ddim_sample(unet, ddim_for(scheduler), 2, 4, torch.Generator().manual_seed(5))
    np.testing.assert_allclose(ours, ((expected / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_importance_export_round_trip(tmp_path):
    torch.manual_seed(0)
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    discriminator = TimeConditionedDiscriminator(1, channels=(8,), time_dim=8, num_train_timesteps=100)
    schedule = NoiseScaleSchedule(100, lambda_min=0.5)
    sampler = ImportanceSampler(DiscriminatorImportance(discriminator, blur_sigma=0.5), schedule, "x_t")
    export_pipeline(tmp_path / "pipeline", unet, scheduler, sampler)
    pipe = load_pipeline(tmp_path / "pipeline")
    assert isinstance(pipe, ImportanceDiffusionPipeline)
    assert pipe.noise_schedule() == schedule and pipe.config.map_source == "x_t" and pipe.config.blur_sigma == 0.5
    ours = sample_pipeline(pipe, 2, num_inference_steps=3, seed=1)
    expected = sampler(unet, ddim_for(scheduler), 2, 3, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(ours, ((expected / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_samplers_without_a_pipeline_are_refused_with_one_line(tmp_path):
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    with pytest.raises(TypeError, match="has no to_pipeline.*or None for a standard-noise run"):
        export_pipeline(tmp_path / "pipeline", unet, scheduler, ddim_sample)
    discriminator = TimeConditionedDiscriminator(1, channels=(8,), time_dim=8, num_train_timesteps=100)
    sampler = ImportanceSampler(DiscriminatorImportance(discriminator), TimeConstantScale(0.1))
    with pytest.raises(ValueError, match="NoiseScaleSchedule only .*use FixedMapSampler"):
        export_pipeline(tmp_path / "pipeline", unet, scheduler, sampler)
    sampler = ImportanceSampler(lambda images, timesteps: images[:, :1].abs(), NoiseScaleSchedule(100))
    with pytest.raises(ValueError, match="must be a DiscriminatorImportance"):
        export_pipeline(tmp_path / "pipeline", unet, scheduler, sampler)
    assert not (tmp_path / "pipeline").exists()


def test_an_export_with_the_former_map_source_name_loads_as_x0(tmp_path):
    torch.manual_seed(0)
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    discriminator = TimeConditionedDiscriminator(1, channels=(8,), time_dim=8, num_train_timesteps=100)
    sampler = ImportanceSampler(DiscriminatorImportance(discriminator), NoiseScaleSchedule(100), "x0")
    export_pipeline(tmp_path / "pipeline", unet, scheduler, sampler)
    index = tmp_path / "pipeline" / "model_index.json"
    saved = json.loads(index.read_text())
    assert saved["map_source"] == "x0"
    index.write_text(json.dumps({**saved, "map_source": "x0_hat"}))  # as written before the rename
    pipe = load_pipeline(tmp_path / "pipeline")
    assert pipe.config.map_source == "x0"
    ours = sample_pipeline(pipe, 2, num_inference_steps=3, seed=1)
    expected = sampler(unet, ddim_for(scheduler), 2, 3, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(ours, ((expected / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="'x0_hat' is now called 'x0'"):
        ImportanceDiffusionPipeline(unet, scheduler, discriminator, map_source="x0_hat")


def test_export_replaces_a_pipeline_whole_and_a_failed_export_keeps_the_old_one(tmp_path, monkeypatch):
    scheduler = build_noise_scheduler(100)
    first = build_unet(16, 1, (8, 8), norm_num_groups=4)
    second = build_unet(16, 1, (8, 8), norm_num_groups=4)
    export_pipeline(tmp_path / "pipeline", first, scheduler)
    export_pipeline(tmp_path / "pipeline", second, scheduler)  # a resumed run exports again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]  # no hidden leftovers
    loaded = load_pipeline(tmp_path / "pipeline").unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in second.state_dict().items())

    def crash(self, path, **kwargs):  # a crash half-way through writing the new export
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model_index.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(DDPMPipeline, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        export_pipeline(tmp_path / "pipeline", first, scheduler)
    monkeypatch.undo()
    loaded = load_pipeline(tmp_path / "pipeline").unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in second.state_dict().items())


def test_a_corrupt_export_is_one_checkpoint_error(tmp_path):
    from xai_train.checkpoint import CheckpointError

    export_pipeline(tmp_path / "pipeline", build_unet(16, 1, (8, 8), norm_num_groups=4), build_noise_scheduler(100))
    weights = tmp_path / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot load the pipeline in .*sample a checkpoint of the run"):
        load_pipeline(tmp_path / "pipeline")
    (tmp_path / "pipeline" / "model_index.json").write_text("{")
    with pytest.raises(CheckpointError, match="model_index.json' is corrupt"):
        load_pipeline(tmp_path / "pipeline")
