"""The flaw highlighter's trainers and the self_refine config section's checks."""

import numpy as np
import pytest
import torch
from PIL import Image

from xai_train.config import ConfigError, load_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.diffusion.self_refine import (
    OnlineHighlighter,
    build_highlighter,
    highlighter_accuracy,
    offline_highlighter,
    train_highlighter,
)


def bright_dark(count, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(count, 1, 32, 32, generator=g) * 0.4
    return noise + 0.4, noise - 0.8  # "real" brighter than "generated"


def test_offline_training_keeps_the_best_held_out_epoch():
    real, fake = bright_dark(60)
    fh = build_highlighter(32, 1, width=4, seed=0)
    report = train_highlighter(fh, real, fake, epochs=3, batch_size=8, lr=5e-3, seed=0)
    assert len(report.losses) == len(report.accuracies) == 3
    assert report.best_accuracy == max(report.accuracies) == 1.0
    assert report.best_epoch == report.accuracies.index(1.0) + 1  # the first epoch that reached it
    assert highlighter_accuracy(fh, real, fake) == 1.0


def test_online_steps_learn_and_pass_every_gradient_through_the_reducer():
    real, fake = bright_dark(8)
    online = OnlineHighlighter(build_highlighter(32, 1, width=4, seed=0), lr=1e-3)
    losses = [float(online.step(real, fake)) for _ in range(5)]
    assert losses[-1] < losses[0] and online.steps == 5
    # a reducer that zeroes the gradients leaves only AdamW's decoupled weight decay: p ← p·(1 − lr·wd)
    frozen = OnlineHighlighter(build_highlighter(32, 1, width=4, seed=0), lr=1e-3, reduce_grad=torch.zeros_like)
    before = [p.detach().clone() for p in frozen.highlighter.parameters()]
    frozen.step(real, fake)
    for p, p0 in zip(frozen.highlighter.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), p0 * (1 - 1e-3 * 0.01), rtol=1e-6, atol=0)


def test_offline_highlighter_from_the_authors_two_folders(tmp_path):
    real, fake = bright_dark(20)
    for name, images in (("real", real), ("fake", fake)):
        (tmp_path / name).mkdir()
        for i, image in enumerate(images):
            pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            Image.fromarray(np.asarray(pixels), mode="L").save(tmp_path / name / f"{i}.png")
    fh = offline_highlighter(
        32, 1, width=4, real_dir=tmp_path / "real", fake_dir=tmp_path / "fake", epochs=3, batch_size=4, lr=5e-3,
        held_out=0.2,
    )  # fmt: skip
    assert highlighter_accuracy(fh, real, fake) == 1.0
    with pytest.raises(ValueError, match="both real_dir and fake_dir"):
        offline_highlighter(32, 1, real_dir=tmp_path / "real")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("self_refine.target=consistent", "preset 'reference' fixes it to 'reference'"),
        ("self_refine.fam_cycle=0", "fam_cycle=0: must be >= 1"),
        ("self_refine.noise_weight=-0.1", "noise_weight=-0.1: must be >= 0"),
        ("self_refine.highlighter_held_out=1.0", "must be in [0, 1)"),
        ("self_refine.method=salincy", "unknown explainer 'salincy'"),
        ("self_refine.target=both", "'both' is not one of"),
    ],
)
def test_config_errors_are_one_line_and_name_the_value(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")) as info:
        load_config(DiffusionExperiment, overrides=["self_refine.enabled=true", override])
    assert "\n" not in str(info.value)


def test_custom_preset_accepts_the_variants_and_protect_needs_a_small_weight():
    config = load_config(
        DiffusionExperiment,
        overrides=["self_refine.preset=custom", "self_refine.target=consistent", "self_refine.fam_reduce=per_sample"],
    )
    kwargs = config.self_refine.callback_kwargs(batch_size=32, seed=3)
    assert kwargs["target"] == "consistent" and kwargs["num_samples"] == 32 and kwargs["seed"] == 3
    assert "preset" not in kwargs and "highlighter_checkpoint" not in kwargs
    with pytest.raises(ConfigError, match="direction 'protect' needs w_n < 1"):
        load_config(
            DiffusionExperiment,
            overrides=["self_refine.preset=custom", "self_refine.direction=protect", "self_refine.noise_weight=1.5"],
        )
