"""xai_train.runs: checkpoint names, completion markers, and a GAN run's weights as saved."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xai_train.checkpoint import COMPLETE_FILE, TRAINER_STATE_FILE, CheckpointError
from xai_train.config import save_config
from xai_train.config.gan import GANExperiment, GANModelConfig
from xai_train.models import build_gan
from xai_train.runs import checkpoint_folder, load_gan_run


def _checkpoint(run_dir: Path, name: str, complete: bool = True, seed: int = 0, ema: bool = False) -> dict:
    """Writes a GAN checkpoint folder of seeded random weights; returns the tensors it holds."""
    torch.manual_seed(seed)
    G, D = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    folder = run_dir / "checkpoints" / name
    folder.mkdir(parents=True)
    save_file(G.state_dict(), str(folder / "model.safetensors"))
    save_file(D.state_dict(), str(folder / "model_1.safetensors"))
    shadow = [torch.randn_like(p) for p in G.parameters()]
    torch.save({"step": 1, "ema": {"shadow_params": shadow} if ema else None}, folder / TRAINER_STATE_FILE)
    if complete:
        (folder / COMPLETE_FILE).write_text('{"files": {}}')
    return {"G": G.state_dict(), "D": D.state_dict(), "shadow": shadow}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    save_config(GANExperiment(model=GANModelConfig(g_width=8, d_width=8)), tmp_path / "config.yaml")
    return tmp_path


def test_wrong_name_lists_the_valid_ones(run_dir):
    for name in ("step_10", "step_2", "best"):
        _checkpoint(run_dir, name)
    _checkpoint(run_dir, "step_30", complete=False)
    with pytest.raises(CheckpointError) as info:
        checkpoint_folder(run_dir, "step_7")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.endswith("choose one of: latest, best, step_2, step_10"), message
    assert checkpoint_folder(run_dir, "best") == run_dir / "checkpoints" / "best"
    assert checkpoint_folder(run_dir, "step_2") == run_dir / "checkpoints" / "step_2"
    with pytest.raises(CheckpointError, match="step_30' is not a complete checkpoint"):
        checkpoint_folder(run_dir, "step_30")  # cut short: not loadable by name either
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        checkpoint_folder(run_dir / "nothing", "latest")


def test_latest_skips_a_folder_without_the_completion_marker(run_dir):
    saved = _checkpoint(run_dir, "step_5", seed=1)
    _checkpoint(run_dir, "step_9", complete=False, seed=2)  # newer, but a save cut short
    assert checkpoint_folder(run_dir) == run_dir / "checkpoints" / "step_5"
    run = load_gan_run(run_dir)
    assert run.folder.name == "step_5"
    assert all(torch.equal(run.discriminator.state_dict()[k], v) for k, v in saved["D"].items())


def test_a_run_from_before_the_marker_still_loads(run_dir):
    _checkpoint(run_dir, "step_3", complete=False, seed=1)
    saved = _checkpoint(run_dir, "step_4", complete=False, seed=2)  # no checkpoint.json anywhere: older version
    run = load_gan_run(run_dir)
    assert run.folder.name == "step_4"
    assert all(torch.equal(run.discriminator.state_dict()[k], v) for k, v in saved["D"].items())


def test_loaded_weights_equal_the_checkpoint(run_dir):
    plain = _checkpoint(run_dir, "step_1", seed=3)
    with_ema = _checkpoint(run_dir, "step_2", seed=4, ema=True)
    run = load_gan_run(run_dir, "step_1")
    assert all(torch.equal(run.generator.state_dict()[k], v) for k, v in plain["G"].items())
    assert all(torch.equal(run.discriminator.state_dict()[k], v) for k, v in plain["D"].items())
    assert not run.generator.training and not run.discriminator.training
    run = load_gan_run(run_dir)  # latest = step_2, which kept EMA weights: G gets them, D its own
    assert all(torch.equal(p, s) for p, s in zip(run.generator.parameters(), with_ema["shadow"], strict=True))
    assert not torch.equal(next(run.generator.parameters()), next(iter(with_ema["G"].values())))
    assert all(torch.equal(run.discriminator.state_dict()[k], v) for k, v in with_ema["D"].items())
