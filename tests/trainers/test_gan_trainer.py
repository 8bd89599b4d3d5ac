"""GAN trainer: smoke run, run directory contents, resume equivalence, accumulation, bad input."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xai_train.callback import Callback
from xai_train.checkpoint import CheckpointError
from xai_train.config.gan import GANTrainConfig
from xai_train.errors import UserError
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


def tiny_models(norm="batch", seed=0):
    torch.manual_seed(seed)
    return build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8, g_norm=norm, d_norm=norm)


@pytest.fixture(scope="module")
def images():
    return torch.rand(96, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def config(**changes):
    base = dict(batch_size=16, max_steps=4, log_every=1, sample_every=2, num_samples=4, checkpoint_every=2)
    base.update(changes)
    return GANTrainConfig(**base)


class StepRecorder(Callback):
    state_key = "recorder"

    def __init__(self):
        self.steps, self.roles, self.started, self.ended = [], [], 0, 0

    def on_train_start(self, state):
        self.started += 1

    def on_before_optimizer_step(self, state, role):
        self.roles.append(role)

    def on_step_end(self, state, logs):
        self.steps.append(state.step)

    def on_train_end(self, state):
        self.ended += 1

    def state_dict(self):
        return {"steps": torch.tensor(self.steps)}

    def load_state_dict(self, state):
        self.steps = state["steps"].tolist()


def test_smoke_run_writes_the_run_directory(tmp_path, images):
    G, D = tiny_models()
    recorder = StepRecorder()
    trainer = GANTrainer(
        G,
        D,
        images,
        config(),
        callbacks=[recorder],
        run_dir=tmp_path / "run",
        run_config={"a": {"b": 1}},
        cpu=True,
    )
    summary = trainer.train()
    run = tmp_path / "run"
    assert summary["steps"] == 4
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
    assert recorder.steps == [1, 2, 3, 4] and recorder.started == recorder.ended == 1
    assert recorder.roles == ["discriminator", "generator"] * 4
    assert (run / "config.yaml").read_text().startswith("a:")
    assert (run / "samples.png").is_file() and (run / "samples" / "step_0000002.png").is_file()
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_2", "step_4"] or sorted(
        p.name for p in (run / "checkpoints").iterdir()
    ) == ["step_2", "step_4"]
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert torch.isfinite(torch.tensor(summary[key]))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))[-1]
    weights = load_file(latest / "model.safetensors")
    weights.update({f"D.{k}": v for k, v in load_file(latest / "model_1.safetensors").items()})
    return weights


@pytest.mark.parametrize("arch", ["dcgan", "paper_mlp"])
def test_resume_equals_straight_run(tmp_path, images, arch, capsys):
    """N steps + resume + N steps equals 2N straight steps exactly (CPU, same process count)."""

    def models():
        torch.manual_seed(0)
        return build_gan(arch, image_size=32, channels=1, g_width=8, d_width=8, dropout=0.3)

    cfg = config(max_steps=6, checkpoint_every=3, sample_every=0, ema_decay=0.9)
    GANTrainer(*models(), images, cfg, run_dir=tmp_path / "straight", cpu=True).train()
    first = GANTrainer(
        *models(),
        images,
        config(max_steps=3, checkpoint_every=3, sample_every=0, ema_decay=0.9),
        run_dir=tmp_path / "split",
        cpu=True,
    )
    first.train()
    again = GANTrainer(
        *models(),
        images,
        config(max_steps=3, checkpoint_every=3, sample_every=0, ema_decay=0.9),
        run_dir=tmp_path / "split",
        resume="auto",
        cpu=True,
    )
    assert again.train()["steps"] == 3  # a finished run resumed: says so, trains nothing
    assert "nothing to train: the checkpoint is at step 3, train.max_steps=3" in capsys.readouterr().out
    recorder = StepRecorder()
    resumed = GANTrainer(
        *models(), images, cfg, run_dir=tmp_path / "split", resume="auto", callbacks=[recorder], cpu=True
    )
    assert resumed.train()["steps"] == 6
    assert recorder.steps == [4, 5, 6]
    straight, split = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert straight.keys() == split.keys()
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    ema_straight = torch.load(tmp_path / "straight/checkpoints/step_6/trainer_state.pt", weights_only=True)["ema"]
    ema_split = torch.load(tmp_path / "split/checkpoints/step_6/trainer_state.pt", weights_only=True)["ema"]
    for a, b in zip(ema_straight["shadow_params"], ema_split["shadow_params"], strict=True):
        assert torch.equal(a, b)


def test_callback_state_is_restored_on_resume(tmp_path, images):
    recorder = StepRecorder()
    GANTrainer(*tiny_models(), images, config(max_steps=2), callbacks=[recorder], run_dir=tmp_path, cpu=True).train()
    again = StepRecorder()
    GANTrainer(
        *tiny_models(),
        images,
        config(max_steps=3),
        callbacks=[again],
        run_dir=tmp_path,
        resume="auto",
        cpu=True,
    ).train()
    assert again.steps == [1, 2, 3]


def test_gradient_accumulation_matches_a_big_batch(images):
    """Two micro-batches of 16 accumulate to the gradient of one batch of 32 (BN-free models)."""

    def run(batch, accum):
        trainer = GANTrainer(
            *tiny_models(norm="none"),
            images,
            config(batch_size=batch, grad_accum_steps=accum, max_steps=2),
            cpu=True,
        )
        trainer.train()
        return {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.generator).state_dict().items()}

    big, accumulated = run(32, 1), run(16, 2)
    # Not bitwise: the latent noise and data come in the same order but are summed in two halves.
    for key in big:
        torch.testing.assert_close(big[key], accumulated[key], rtol=1e-4, atol=1e-5)


def test_d_steps_per_g_step_and_stop_request(images):
    class StopAtTwo(Callback):
        def on_step_end(self, state, logs):
            if state.step == 2:
                state.request_stop()

    recorder = StepRecorder()
    trainer = GANTrainer(
        *tiny_models(),
        images,
        config(d_steps_per_g_step=2, max_steps=5),
        callbacks=[recorder, StopAtTwo()],
        cpu=True,
    )
    assert trainer.train()["steps"] == 2
    assert recorder.roles == ["discriminator", "discriminator", "generator"] * 2


def test_discriminator_grad_untouched_by_generator_step(images):
    trainer = GANTrainer(*tiny_models(), images, config(max_steps=1), cpu=True)
    trainer.train()
    D = trainer.accelerator.unwrap_model(trainer.discriminator)
    assert all(p.grad is None for p in D.parameters())
    assert all(p.requires_grad for p in D.parameters())


def test_bad_inputs(tmp_path, images):
    with pytest.raises(ValueError, match="d_steps_per_g_step=0: must be >= 1"):
        config(d_steps_per_g_step=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        config(mixed_precision="fp8")
    trainer = GANTrainer(*tiny_models(), images, config(), run_dir=tmp_path, resume=str(tmp_path / "nope"), cpu=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.train()


def test_nan_images_and_nan_losses_are_clear_errors(tmp_path, images):
    broken = images.clone()
    broken[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        GANTrainer(*tiny_models(), broken, config(), cpu=True)
    generator, discriminator = tiny_models()
    with torch.no_grad():
        next(discriminator.parameters()).fill_(float("inf"))  # lr_d=inf is a config error now
    trainer = GANTrainer(generator, discriminator, images, config(), run_dir=tmp_path, cpu=True)
    with pytest.raises(FloatingPointError, match="non-finite training values at step 1") as raised:
        trainer.train()
    assert isinstance(raised.value, UserError)  # a recipe prints it as one 'error:' line (exit code 2)


def test_bf16_mixed_precision_on_cpu(images):
    trainer = GANTrainer(*tiny_models(), images, config(mixed_precision="bf16", max_steps=2), cpu=True)
    summary = trainer.train()
    assert summary["steps"] == 2
    assert all(torch.isfinite(torch.tensor(summary[k])) for k in ("d_loss", "g_loss"))
    G = trainer.accelerator.unwrap_model(trainer.generator)
    assert all(p.dtype == torch.float32 for p in G.parameters())  # master weights stay fp32


def test_callbacks_can_request_named_checkpoints(tmp_path, images):
    class BestAtThree(Callback):
        def on_step_end(self, state, logs):
            if state.step == 3:
                state.request_checkpoint("best")

    GANTrainer(*tiny_models(), images, config(), callbacks=[BestAtThree()], run_dir=tmp_path, cpu=True).train()
    best = torch.load(tmp_path / "checkpoints" / "best" / "trainer_state.pt", weights_only=True)
    assert best["step"] == 3
