"""Train a diffusion model (diffusers UNet2DModel + DDPMScheduler), optionally explanation-guided.

    python recipes/train_diffusion.py --config configs/diffusion/ddpm_digits.yaml
    python recipes/train_diffusion.py --config configs/diffusion/ddpm_digits_xai_noise.yaml train.max_steps=200
    python recipes/train_diffusion.py --config configs/diffusion/ddpm_digits_xai_weight.yaml run.resume=auto
    accelerate launch --num_processes 4 recipes/train_diffusion.py --config configs/diffusion/ddpm_digits.yaml
    accelerate launch --cpu recipes/train_diffusion.py --config configs/diffusion/ddpm_digits.yaml  # one CPU process
    torchrun --nproc_per_node 2 recipes/train_diffusion.py --config configs/diffusion/ddpm_shapes.yaml  # 2 CPU procs

Outputs go to <run.output_dir>/<run.name>/: config.yaml, tensorboard/, samples/, samples.png, maps.png (with a
discriminator), checkpoints/, and pipeline/ (loadable with diffusers.DDPMPipeline.from_pretrained for the
standard forward process, with xai_train.diffusion.pipeline.load_pipeline for importance-scheduled noise and for
self-refining diffusion with the consistent target, whose pipeline carries the last FAM).
Sample a finished run with recipes/sample.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import dataclasses
from pathlib import Path

import torch

from callbacks import EvalMetrics, ImportanceNoiseSchedule, ImportanceWeightedLoss, SelfRefiningDiffusion
from xai_train.cli import run_main
from xai_train.config import ConfigError, load_config, to_dict
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.data import build_dataset
from xai_train.diffusion import TimeConditionedDiscriminator
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.diffusion.self_refine import offline_highlighter
from xai_train.threads import configure_threads
from xai_train.trainers.diffusion import DiffusionTrainer


def build_callbacks(config: DiffusionExperiment, alphas_cumprod: torch.Tensor) -> list:
    """The callbacks the ``importance_*`` sections ask for; the noise schedule comes first so that the
    loss weight is computed from the x_t the UNet actually sees."""
    callbacks: list = []
    noise = config.importance_noise
    if noise.enabled:
        callbacks.append(
            ImportanceNoiseSchedule(
                alphas_cumprod,
                mode=noise.mode,
                sharpness=noise.sharpness,
                midpoint=noise.midpoint,
                lambda_min=noise.lambda_min,
                lambda_max=noise.lambda_max,
                map_source=noise.map_source,
                method=noise.method,
                blur_sigma=noise.blur_sigma,
                num_inference_steps=config.train.sample_steps,
                num_buckets=noise.num_buckets,
                uniform_mix=noise.uniform_mix,
                decay=noise.decay,
                self_normalise=noise.self_normalise,
                update_every=noise.update_every,
                seed=config.run.seed,
                log_every=config.log_maps_every,
            )
        )
    weight = config.importance_weight
    if weight.enabled:
        callbacks.append(
            ImportanceWeightedLoss(
                rule=weight.rule,
                alpha=weight.alpha,
                beta=weight.beta,
                map_source=weight.map_source,
                method=weight.method,
                blur_sigma=weight.blur_sigma,
                start_step=weight.start_step,
                log_every=config.log_maps_every,
            )
        )
    return callbacks


def build_self_refine(
    config: DiffusionExperiment, images: torch.Tensor, alphas_cumprod: torch.Tensor, trainer_box: list
) -> SelfRefiningDiffusion:
    """The ``self_refine`` section as a callback; it samples through the trainer (EMA UNet, the run's sampler)."""
    r, data = config.self_refine, config.data
    if r.fam_source == "discriminator" and not config.discriminator.enabled:
        raise ConfigError("self_refine.fam_source=discriminator needs a discriminator: set discriminator.enabled=true")
    noise = config.importance_noise
    if r.resolved_sampler() == "per_pixel" and noise.enabled and noise.mode == "pixel":
        raise ConfigError(
            f"self_refine.sampler={r.sampler} (per-pixel with the FAM) and importance_noise.mode=pixel both scale "
            "the noise, and no sampler takes their product: set self_refine.sampler=plain or "
            "importance_noise.enabled=false"
        )
    highlighter = offline_highlighter(data.image_size, data.channels, **r.highlighter_kwargs(config.run.seed))
    return SelfRefiningDiffusion(
        lambda n, steps, generator: trainer_box[0].sample(n, steps, generator),
        images,
        highlighter,
        alphas_cumprod=alphas_cumprod,
        pretrained_highlighter=highlighter is not None,
        **r.callback_kwargs(config.train.batch_size, config.run.seed),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (defaults apply to missing keys)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)  # OMP_NUM_THREADS if set, else half the CPUs: robust to other load
    config = load_config(DiffusionExperiment, args.config, args.overrides)  # also checks rules across sections

    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    data = config.data
    dataset = build_dataset(**data.dataset_kwargs(config.run.seed))
    u, s = config.unet, config.scheduler
    unet = build_unet(data.image_size, data.channels, **dataclasses.asdict(u))  # UNetConfig = build_unet's options
    noise_scheduler = build_noise_scheduler(s.num_train_timesteps, s.beta_schedule, s.prediction_type, s.clip_sample)
    discriminator = None
    if config.discriminator.enabled:
        d = config.discriminator
        discriminator = TimeConditionedDiscriminator(
            data.channels, d.channels, d.time_dim, d.norm_groups, s.num_train_timesteps
        )
    callbacks = build_callbacks(config, noise_scheduler.alphas_cumprod)
    # A model trained with per-pixel noise (importance_noise.mode=pixel, or self-refining diffusion with the
    # consistent target) is sampled (grids, D's fakes, FAM samples, eval, export) with its own per-pixel sampler.
    samplers = [cb.sampler(discriminator) for cb in callbacks if isinstance(cb, ImportanceNoiseSchedule)]
    samplers = [sampler for sampler in samplers if sampler is not None]  # "timesteps" mode samples plainly
    trainer_box: list[DiffusionTrainer] = []  # the sampler of the eval callback needs the trainer built below
    if config.eval.enabled:
        evaluation = config.eval
        callbacks.append(
            EvalMetrics(
                **evaluation.callback_kwargs(data, config.run.seed),
                sample_fn=lambda n, generator: trainer_box[0].sample(n, config.train.sample_steps, generator),
            )
        )
    if config.self_refine.enabled:
        self_refine = build_self_refine(config, dataset.images, noise_scheduler.alphas_cumprod, trainer_box)
        callbacks.append(self_refine)
        if config.self_refine.resolved_sampler() == "per_pixel":  # a consistent-target model predicts g⊙ε
            samplers.append(self_refine.sampler())
    trainer = DiffusionTrainer(
        unet,
        noise_scheduler,
        dataset.images,
        config.train,
        discriminator=discriminator,
        discriminator_config=config.discriminator,
        callbacks=callbacks,
        sampler=samplers[0] if samplers else None,
        run_dir=Path(config.run.output_dir) / config.run.name,
        seed=config.run.seed,
        resume=config.run.resume,
        run_config=to_dict(config),
        cpu=config.run.cpu,
    )
    trainer_box.append(trainer)
    trainer.accelerator.print(threads.describe())
    summary = trainer.train()
    trainer.accelerator.print(
        f"done: {summary['steps']} steps, median step {summary['median_step_time'] * 1000:.1f} ms, "
        f"run directory {summary['run_dir']}"
    )
    return summary


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
