"""The shipped SRD configs through recipes/train_diffusion.py, end to end, and the exported pipelines."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from xai_train.checkpoint.reading import CheckpointError
from xai_train.config import ConfigError, load_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.diffusion.importance_schedule import TimeConstantScale
from xai_train.diffusion.models import ddim_for
from xai_train.diffusion.pipeline import FixedMapDiffusionPipeline, load_pipeline, sample_pipeline
from xai_train.diffusion.samplers import FixedMapSampler

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=16",
    "data.num_samples=64",
    "unet.block_out_channels=[16, 32]",
    "train.batch_size=8",
    "train.max_steps=4",
    "train.sample_every=0",
    "train.num_samples=4",
    "train.sample_steps=2",
    "train.checkpoint_every=0",
    "self_refine.first_process=2",
    "self_refine.fam_cycle=1",
    "self_refine.sample_steps=2",
    "self_refine.highlighter_samples=8",
    "self_refine.highlighter_epochs=1",
    "self_refine.highlighter_width=4",
    "run.cpu=true",
]


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["srd_digits", "srd_shapes"])
def test_srd_config_trains_and_exports_a_plain_ddpm_pipeline(tmp_path, config_name, load_recipe):
    config = REPO / "configs" / "diffusion" / f"{config_name}.yaml"
    summary = load_recipe("train_diffusion").main(["--config", str(config), *TINY, f"run.output_dir={tmp_path}"])
    run = Path(summary["run_dir"])
    assert summary["steps"] == 4
    state = torch.load(run / "checkpoints" / "step_4" / "callbacks.pt", weights_only=True)["self_refining_diffusion"]
    assert state["refreshes"] == 2 and state["highlighter_ready"]  # FAMs at steps 2 and 3
    assert state["fam"].shape == (1, 1, 16, 16)
    pipeline = DDPMPipeline.from_pretrained(run / "pipeline")
    images = sample_pipeline(pipeline, 2, num_inference_steps=2, seed=0)
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()


CONSISTENT = ["self_refine.preset=custom", "self_refine.target=consistent"]


def test_srd_digits_consistent_trains_exports_the_last_fam_and_reloads(tmp_path, load_recipe):
    """The consistent target samples with the per-pixel sampler; the export carries the FAM of the last refresh,
    and sample.py samples a checkpoint with that checkpoint's FAM, exactly as the export."""
    config = REPO / "configs" / "diffusion" / "srd_digits.yaml"
    every_step = ["train.checkpoint_every=1", "train.keep_checkpoints=0"]  # step_1 is before the first FAM
    summary = load_recipe("train_diffusion").main(
        ["--config", str(config), *TINY, *CONSISTENT, *every_step, f"run.output_dir={tmp_path}"]
    )
    run = Path(summary["run_dir"])
    state = torch.load(run / "checkpoints" / "step_4" / "callbacks.pt", weights_only=True)["self_refining_diffusion"]
    assert state["refreshes"] == 2  # FAMs at steps 2 and 3
    pipeline = load_pipeline(run / "pipeline")
    assert isinstance(pipeline, FixedMapDiffusionPipeline)
    assert torch.equal(pipeline.fixed_map.importance, state["fam"])
    assert (pipeline.config.noise_weight, pipeline.config.direction) == (0.01, "amplify")
    in_memory = FixedMapSampler(state["fam"], TimeConstantScale(0.01))(
        pipeline.unet, ddim_for(pipeline.scheduler), 2, 3, torch.Generator().manual_seed(0)
    )
    expected = (in_memory / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(sample_pipeline(pipeline, 2, num_inference_steps=3, seed=0), expected)

    sample = load_recipe("sample")

    def sampled(*args: str) -> np.ndarray:
        out = sample.main([str(run), "--num-images", "2", "--steps", "3", "--seed", "0", *args])
        return np.load(out / "samples.npz")["images"]

    exported = sampled("--out", str(tmp_path / "exported"))
    np.testing.assert_array_equal(exported, expected)
    np.testing.assert_array_equal(sampled("--checkpoint", "latest", "--out", str(tmp_path / "step_4")), exported)
    run_config = load_config(DiffusionExperiment, run / "config.yaml")
    latest = sample.pipeline_from_checkpoint(run_config, run / "checkpoints" / "step_4")
    assert isinstance(latest, FixedMapDiffusionPipeline) and torch.equal(latest.fixed_map.importance, state["fam"])
    early = run / "checkpoints" / "step_1"  # before the first FAM: plain DDIM, as a run stopped there exports
    assert torch.load(early / "callbacks.pt", weights_only=True)["self_refining_diffusion"]["fam"] is None
    assert type(sample.pipeline_from_checkpoint(run_config, early)) is DDPMPipeline
    torch.save({}, tmp_path / "callbacks.pt")  # a checkpoint without the callback's state
    with pytest.raises(CheckpointError, match="holds no self-refining diffusion state.*leave out --checkpoint"):
        sample.saved_fam(tmp_path)


def test_the_recipe_refuses_two_per_pixel_noise_scales(tmp_path, load_recipe):
    config = REPO / "configs" / "diffusion" / "srd_digits.yaml"
    overrides = [*TINY, *CONSISTENT, "discriminator.enabled=true", "importance_noise.enabled=true"]
    with pytest.raises(ConfigError, match="no sampler takes their product: set self_refine.sampler=plain"):
        load_recipe("train_diffusion").main(["--config", str(config), *overrides, f"run.output_dir={tmp_path}"])
