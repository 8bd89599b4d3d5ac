import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline
from safetensors.torch import load_file

from callbacks import ImportanceNoiseSchedule, ImportanceWeightedLoss
from xai_train import Callback
from xai_train.config.diffusion import DiffusionTrainConfig, DiscriminatorConfig
from xai_train.diffusion import ExportableSampler, ImportanceSampler, TimeConditionedDiscriminator, ddim_sample
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.diffusion.pipeline import ImportanceDiffusionPipeline, load_pipeline, sample_pipeline
from xai_train.trainers.diffusion import DiffusionTrainer

REPO = Path(__file__).resolve().parents[2]


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, logs):
        if state.step == self.step:
            state.request_stop()


def make_trainer(run_dir, mode="plain", stop_at=None, resume="", **overrides):
    torch.manual_seed(0)
    images = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    unet, scheduler = build_unet(8, 1, (16, 32)), build_noise_scheduler(100)
    settings = dict(
        batch_size=8,
        max_steps=4,
        lr=1e-3,
        lr_warmup_steps=1,
        log_every=1,
        sample_every=0,
        num_samples=4,
        sample_steps=3,
        checkpoint_every=0,
    )
    config = DiffusionTrainConfig(**{**settings, **overrides})
    discriminator, d_config, callbacks, sampler = None, None, [], None
    if mode != "plain":
        discriminator = TimeConditionedDiscriminator(1, (8, 16), 16, num_train_timesteps=100)
        d_config = DiscriminatorConfig(
            enabled=True,
            buffer_capacity=16,
            buffer_refresh_every=2,
            buffer_refresh_size=4,
            sample_steps=2,
            r1_every=2,
            fake_source="x0_hat" if mode == "pixel" else "samples",
        )
        alphas = scheduler.alphas_cumprod
        noise = ImportanceNoiseSchedule(alphas, mode=mode if mode == "pixel" else "timesteps", num_buckets=4, seed=0)
        callbacks = [noise, ImportanceWeightedLoss(rule="mean", start_step=0)]
        sampler = noise.sampler(discriminator)
    if stop_at is not None:
        callbacks.append(StopAt(stop_at))
    return DiffusionTrainer(
        unet,
        scheduler,
        images,
        config,
        discriminator=discriminator,
        discriminator_config=d_config,
        callbacks=callbacks,
        sampler=sampler,
        run_dir=run_dir,
        resume=resume,
        cpu=True,
    )


def test_standard_run_exports_a_diffusers_pipeline(tmp_path):
    summary = make_trainer(tmp_path / "run").train()
    assert summary["steps"] == 4 and np.isfinite(summary["loss"])
    assert (tmp_path / "run" / "samples.png").is_file() and (tmp_path / "run" / "checkpoints" / "step_4").is_dir()
    pipe = DDPMPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 8, 8, 1) and np.isfinite(out.images).all()


class DDIMExport:
    """An exportable sampler of the user's own, no ``ImportanceSampler``: plain DDIM, exported as a DDIMPipeline."""

    def __call__(self, unet, scheduler, batch_size, num_inference_steps=50, generator=None):
        return ddim_sample(unet, scheduler, batch_size, num_inference_steps, generator)

    def to_pipeline(self, unet, noise_scheduler):
        return DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config))


def test_the_trainer_exports_any_exportable_sampler_and_says_why_it_skips_others(tmp_path, capsys):
    sampler = DDIMExport()
    assert isinstance(sampler, ExportableSampler) and not isinstance(sampler, ImportanceSampler)
    trainer = make_trainer(None, max_steps=2)  # no run folder: export only where asked
    trainer.train()
    trainer.sampler = sampler
    assert trainer.export(tmp_path / "pipeline") == tmp_path / "pipeline"
    assert json.loads((tmp_path / "pipeline" / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
    exported = DDIMPipeline.from_pretrained(tmp_path / "pipeline").unet.state_dict()
    unet = trainer.accelerator.unwrap_model(trainer.unet)
    for name, shadow in zip([n for n, _ in unet.named_parameters()], trainer.ema.shadow_params, strict=True):
        assert torch.equal(exported[name], shadow)  # the EMA UNet, through the sampler's own pipeline
    assert any(not torch.equal(exported[n], p) for n, p in unet.named_parameters())

    trainer.sampler = sampler.__call__  # a plain callable: nothing to export it with
    capsys.readouterr()
    assert trainer.export(tmp_path / "other") is None and not (tmp_path / "other").exists()
    assert "not exporting a pipeline" in capsys.readouterr().out


def test_export_holds_the_ema_weights(tmp_path):
    trainer = make_trainer(tmp_path / "run", max_steps=2)
    trainer.train()
    exported = load_file(tmp_path / "run" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    unet = trainer.accelerator.unwrap_model(trainer.unet)
    names = [name for name, _ in unet.named_parameters()]
    for name, shadow in zip(names, trainer.ema.shadow_params, strict=True):
        torch.testing.assert_close(exported[name], shadow)
    assert any(not torch.equal(exported[n], p) for n, p in unet.named_parameters())


@pytest.mark.parametrize("mode", ["timesteps", "pixel"])
def test_xai_run_logs_d_statistics_and_writes_maps(tmp_path, mode):
    summary = make_trainer(tmp_path / "run", mode).train()
    for key in ("d_loss", "d_real", "d_fake", "r1"):
        assert np.isfinite(summary[key])
    assert (summary["buffer_age"] >= 0) if mode == "timesteps" else "buffer_age" not in summary
    assert (tmp_path / "run" / "maps.png").is_file()
    pipe = load_pipeline(tmp_path / "run" / "pipeline")
    assert isinstance(pipe, ImportanceDiffusionPipeline) == (mode == "pixel")
    assert np.isfinite(sample_pipeline(pipe, 2, num_inference_steps=2)).all()


@pytest.mark.parametrize("mode", ["plain", "timesteps", "pixel"])
def test_resume_equivalence(tmp_path, mode):
    """2 steps + checkpoint + resume + 2 steps == 4 steps (same weights, EMA, D, buffer; atol 1e-6)."""
    straight = make_trainer(tmp_path / "a", mode)
    straight.train()
    make_trainer(tmp_path / "b", mode, stop_at=2).train()
    assert (tmp_path / "b" / "checkpoints" / "step_2").is_dir()
    resumed = make_trainer(tmp_path / "b", mode, resume="auto")
    assert resumed.train()["steps"] == 4
    pairs = [(straight.unet, resumed.unet)]
    if mode != "plain":
        pairs.append((straight.models["discriminator"], resumed.models["discriminator"]))
    for a, b in pairs:
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    for p, q in zip(straight.ema.shadow_params, resumed.ema.shadow_params, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    if mode == "timesteps":  # the replay buffer (refilled at steps 0 and 2) came back too
        torch.testing.assert_close(straight.adversary.buffer.images, resumed.adversary.buffer.images, rtol=0, atol=1e-6)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    trainer = make_trainer(None, "timesteps", grad_accum_steps=2, max_steps=2)
    trainer.train()
    assert trainer.ema.optimization_step == 2
    assert trainer.batches.state_dict()["position"] == 4  # 2 steps x 2 micro-batches
    assert trainer.optimizer.optimizer.state[next(iter(trainer.optimizer.optimizer.state))]["step"] == 2


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_and_bf16(tmp_path, prediction_type):
    trainer = make_trainer(None, mixed_precision="bf16", loss_weighting="min_snr", max_steps=2)
    trainer.noise_scheduler = build_noise_scheduler(100, prediction_type=prediction_type)
    trainer.prediction_type = prediction_type
    assert np.isfinite(trainer.train()["loss"])


@pytest.mark.slow
def test_two_process_run_matches_one_process_with_the_global_batch(tmp_path, process_groups):
    """torchrun --nproc_per_node 2 with batch 4 per rank == one process with batch 8 (plain DDPM)."""
    common = [
        "--config",
        str(REPO / "configs/diffusion/ddpm_digits.yaml"),
        "data.image_size=16",
        "unet.block_out_channels=[16, 32]",
        "train.max_steps=3",
        "train.sample_every=0",
        "train.num_samples=4",
        "train.sample_steps=2",
        "train.checkpoint_every=0",
        "train.log_every=1",
        "run.cpu=true",
        f"run.output_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(REPO / "recipes/train_diffusion.py"),
    ]
    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    process_groups.run(two + common + ["run.name=two", "train.batch_size=4"], check=True, env=env, timeout=1800)
    one = [sys.executable, str(REPO / "recipes/train_diffusion.py")]
    process_groups.run(one + common + ["run.name=one", "train.batch_size=8"], check=True, env=env, timeout=1800)
    weights = "checkpoints/step_3/model.safetensors"
    a, b = load_file(tmp_path / "two" / weights), load_file(tmp_path / "one" / weights)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert (tmp_path / "two" / "pipeline" / "model_index.json").is_file()


@pytest.mark.slow
def test_two_process_run_with_discriminator_and_both_callbacks(tmp_path, process_groups):
    """DDP over UNet and D, the curriculum's gather, the replay buffer's gather, then a resume."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(REPO / "recipes/train_diffusion.py"),
        "--config",
        str(REPO / "configs/diffusion/ddpm_digits_xai_weight.yaml"),
        "data.image_size=16",
        "unet.block_out_channels=[16, 32]",
        "discriminator.channels=[8, 16]",
        "train.batch_size=4",
        "train.sample_every=0",
        "train.num_samples=4",
        "train.sample_steps=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "discriminator.buffer_refresh_every=2",
        "discriminator.buffer_refresh_size=2",
        "discriminator.sample_steps=2",
        "discriminator.r1_every=2",
        "importance_weight.start_step=0",
        "importance_noise.enabled=true",
        "importance_noise.mode=timesteps",
        "importance_noise.num_buckets=4",
        "run.cpu=true",
        f"run.output_dir={tmp_path}",
        "run.name=xai",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    process_groups.run(command + ["train.max_steps=2"], check=True, env=env, timeout=1800)
    process_groups.run(command + ["train.max_steps=4", "run.resume=auto"], check=True, env=env, timeout=1800)
    run = tmp_path / "xai"
    assert (run / "checkpoints" / "step_4" / "model_1.safetensors").is_file()
    assert (run / "maps.png").is_file() and (run / "pipeline" / "model_index.json").is_file()
    callbacks_state = torch.load(run / "checkpoints" / "step_4" / "callbacks.pt", weights_only=True)
    assert bool(callbacks_state["importance_noise_schedule"]["curriculum"]["seen"].any())
