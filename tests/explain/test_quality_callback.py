"""ExplanationQuality: logs the metrics of D's maps during a GAN run, without changing the run."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import ExplanationQuality
from xai_train.config.gan import GANTrainConfig
from xai_train.explain.cams import cam
from xai_train.explain.quality import perturbation_metrics
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

IMAGES = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def run(tmp_path, callbacks):
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    config = GANTrainConfig(batch_size=16, max_steps=4, log_every=1, sample_every=100, num_samples=4)
    trainer = GANTrainer(generator, discriminator, IMAGES, config, callbacks=callbacks, run_dir=tmp_path, cpu=True)
    trainer.train()
    return trainer


def test_logs_metrics_of_the_current_d_and_leaves_training_unchanged(tmp_path):
    fixed = IMAGES[:6]
    callback = ExplanationQuality(fixed, every_n_steps=2, methods=["gradcampp"], metrics=["deletion", "insertion"])
    with_callback = run(tmp_path / "with", [callback])
    without = run(tmp_path / "without", [])
    for a, b in zip(with_callback.generator.parameters(), without.generator.parameters(), strict=True):
        assert torch.equal(a, b)  # the callback never touches a gradient or an RNG the run uses
    (event_file,) = (tmp_path / "with" / "tensorboard").glob("*/events.out.tfevents*")  # Accelerate's tracker
    events = EventAccumulator(str(event_file)).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("explanation/")]
    assert sorted(tags) == ["explanation/gradcampp/deletion", "explanation/gradcampp/insertion"]
    logged = {e.step: e.value for e in events.Scalars("explanation/gradcampp/deletion")}
    assert sorted(logged) == [2, 4]
    d = with_callback.accelerator.unwrap_model(with_callback.discriminator)
    maps = cam(d, fixed, "gradcampp")
    expected = perturbation_metrics(d, fixed, maps, removal="blur", steps=8, score="logit")["deletion"].mean()
    assert logged[4] == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown metric"):
        ExplanationQuality(IMAGES[:2], metrics=["delete"])
    with pytest.raises(ValueError, match="need masks"):
        ExplanationQuality(IMAGES[:2], metrics=["pointing_game"])
    with pytest.raises(ValueError, match="unsupported method"):
        ExplanationQuality(IMAGES[:2], methods=["gradcam++"])


def test_time_conditioned_discriminator_is_explained_at_the_given_timestep():
    from types import SimpleNamespace

    from xai_train.diffusion import TimeConditionedDiscriminator

    torch.manual_seed(0)
    d = TimeConditionedDiscriminator(1, channels=(8, 16))
    state = SimpleNamespace(models={"discriminator": d}, accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    images = IMAGES[:4, :, :16, :16]
    values = {}
    for t in (5, 500):
        callback = ExplanationQuality(images, methods=["layercam", "ablationcam"], metrics=["deletion"], timestep=t)
        values[t] = callback.measure(callback.explained_model(state))
    assert sorted(values[5]) == ["explanation/ablationcam/deletion", "explanation/layercam/deletion"]
    assert all(torch.isfinite(torch.tensor(v)) for v in values[5].values())
    assert values[5] != values[500]  # D(x, t) depends on t, and so do its maps
