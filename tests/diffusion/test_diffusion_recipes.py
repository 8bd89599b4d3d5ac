from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from xai_train.config import ConfigError, load_config
from xai_train.config.diffusion import DiffusionExperiment

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "diffusion").glob("*.yaml"))
TINY = [
    "data.image_size=16",
    "data.num_samples=64",
    "unet.block_out_channels=[16, 32]",
    "discriminator.channels=[8, 16]",
    "train.batch_size=8",
    "train.max_steps=3",
    "train.sample_every=0",
    "train.num_samples=4",
    "train.sample_steps=2",
    "train.checkpoint_every=2",
    "discriminator.buffer_refresh_size=4",
    "discriminator.sample_steps=2",
    "importance_weight.start_step=0",
    "run.cpu=true",
]


def test_shipped_configs_load_and_pass_the_cross_checks():
    assert {p.stem for p in CONFIGS} >= {
        f"ddpm_{data}{arm}" for data in ("digits", "shapes") for arm in ("", "_xai_weight", "_xai_noise")
    }
    for path in CONFIGS:
        config = load_config(DiffusionExperiment, path)  # runs the rules across sections too
        assert config.run.name == path.stem


def test_importance_without_discriminator_is_a_config_error():
    with pytest.raises(ConfigError, match="discriminator.enabled=true"):
        load_config(DiffusionExperiment, overrides=["importance_weight.enabled=true"])


@pytest.mark.parametrize("config_name", ["ddpm_digits", "ddpm_shapes_xai_noise", "ddpm_digits_xai_weight"])
def test_train_then_sample(tmp_path, config_name, load_recipe):
    train, sample = load_recipe("train_diffusion"), load_recipe("sample")
    config = REPO / "configs" / "diffusion" / f"{config_name}.yaml"
    summary = train.main(["--config", str(config), *TINY, f"run.output_dir={tmp_path}"])
    run = Path(summary["run_dir"])
    assert summary["steps"] == 3 and (run / "config.yaml").is_file() and (run / "samples.png").is_file()
    if config_name == "ddpm_digits":  # the standard forward process exports a diffusers pipeline
        DDPMPipeline.from_pretrained(run / "pipeline")
    out = sample.main([str(run), "--num-images", "4", "--steps", "3", "--seed", "2"])
    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (4, 16, 16, 1) and images.min() >= 0 and images.max() <= 1
    assert (out / "samples.png").is_file()
    again = sample.main(
        [
            str(run),
            "--num-images",
            "4",
            "--steps",
            "3",
            "--seed",
            "2",
            "--checkpoint",
            "latest",
            "--out",
            str(tmp_path / "from_checkpoint"),
        ]
    )
    np.testing.assert_allclose(np.load(again / "samples.npz")["images"], images, atol=1e-6)
    # resume finishes an extended run from the latest checkpoint
    more = train.main(
        ["--config", str(config), *TINY, f"run.output_dir={tmp_path}", "train.max_steps=4", "run.resume=auto"]
    )
    assert (
        more["steps"] == 4
        and torch.load(run / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=True)["step"] == 4
    )
