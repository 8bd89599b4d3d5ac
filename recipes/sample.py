"""Sample a trained diffusion run with DDIM into a PNG grid and an .npz.

    python recipes/sample.py runs/ddpm_digits
    python recipes/sample.py runs/ddpm_digits_xai_noise --num-images 64 --steps 50 --seed 1
    python recipes/sample.py runs/ddpm_digits --checkpoint latest      # an unfinished run: EMA weights of a checkpoint
    python recipes/sample.py runs/srd_digits --checkpoint step_1500    # SRD consistent target: with that step's FAM
    accelerate launch recipes/sample.py runs/ddpm_digits               # same, on the accelerator's device

Reads <run>/config.yaml (the resolved config) and the safetensors weights of <run>/pipeline (written at the end
of training) or of a checkpoint. A checkpoint is sampled as the export would sample it: a self-refining diffusion
run with the consistent target with the per-pixel sampler and the checkpoint's FAM (plain DDIM before its first
FAM), an importance-noise run with D's maps. Writes <out>/samples.png and <out>/samples.npz (images:
(N, H, W, C) float32 in [0, 1]; seed; steps). Default <out>: <run>/sampled/seed<seed>_steps<steps>.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMPipeline, DiffusionPipeline
from einops import rearrange
from safetensors.torch import load_file

from callbacks import SelfRefiningDiffusion
from xai_train.callback import CALLBACK_STATE_FILE
from xai_train.checkpoint import TRAINER_STATE_FILE, read_state_file
from xai_train.checkpoint.reading import CheckpointError, check_model_file, read_record
from xai_train.cli import run_main
from xai_train.config import ConfigError, load_config, read_yaml
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.diffusion import FixedMapSampler, TimeConditionedDiscriminator, TimeConstantScale
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.diffusion.pipeline import ImportanceDiffusionPipeline, load_pipeline, sample_pipeline
from xai_train.images import make_grid, save_png
from xai_train.runs import checkpoint_folder
from xai_train.threads import configure_threads

NO_CHECKPOINT_FIX = "train longer, or sample the exported pipeline (leave out --checkpoint)"


def load_weights(folder: Path, index: int, model: torch.nn.Module) -> None:
    """Loads ``model.safetensors`` (index 0) or ``model_<index>.safetensors`` into ``model`` after checking its
    tensor names and shapes; a truncated file or another architecture is a CheckpointError naming the folder."""
    check_model_file(folder, index, model, [])
    model.load_state_dict(load_file(folder / ("model.safetensors" if index == 0 else f"model_{index}.safetensors")))


def pipeline_from_checkpoint(config: DiffusionExperiment, folder: Path) -> DiffusionPipeline:
    """Rebuilds the run's models from its config and loads a checkpoint (EMA weights when the run kept them),
    as the pipeline the run would have exported at that step (for SRD's consistent target: with its FAM)."""
    data, u, s = config.data, config.unet, config.scheduler
    read_record(folder)  # every file checkpoint.json lists is there, with its recorded size
    unet = build_unet(data.image_size, data.channels, **dataclasses.asdict(u))  # UNetConfig = build_unet's options
    load_weights(folder, 0, unet)  # Accelerate saves the first prepared model first
    ema = read_state_file(folder / TRAINER_STATE_FILE).get("ema")
    if ema is not None:
        for param, shadow in zip(unet.parameters(), ema["shadow_params"], strict=True):
            param.data.copy_(shadow)
    scheduler = build_noise_scheduler(s.num_train_timesteps, s.beta_schedule, s.prediction_type, s.clip_sample)
    refine = config.self_refine
    if refine.enabled and refine.resolved_sampler() == "per_pixel":  # the model predicts g⊙ε, g = 1 ± w_n·FAM
        sampler = FixedMapSampler(saved_fam(folder), TimeConstantScale(refine.noise_weight, refine.direction))
        return sampler.to_pipeline(unet, scheduler)  # as the run's export: the FAM's pipeline, plain before one
    noise = config.importance_noise
    if not (noise.enabled and noise.mode == "pixel"):
        return DDPMPipeline(unet=unet, scheduler=scheduler)
    d = config.discriminator
    discriminator = TimeConditionedDiscriminator(
        data.channels, d.channels, d.time_dim, d.norm_groups, s.num_train_timesteps
    )
    load_weights(folder, 1, discriminator)
    return ImportanceDiffusionPipeline(
        unet,
        scheduler,
        discriminator,
        noise.sharpness,
        noise.midpoint,
        noise.lambda_min,
        noise.lambda_max,
        noise.map_source,
        noise.method,
        noise.blur_sigma,
    )


def saved_fam(folder: Path) -> torch.Tensor | None:
    """The FAM in use at a checkpoint of a self-refining diffusion run, (1, 1, H, W); ``None`` before the first."""
    state = read_state_file(folder / CALLBACK_STATE_FILE).get(SelfRefiningDiffusion.state_key)
    if state is None:
        raise CheckpointError(
            f"cannot sample {folder}: its {CALLBACK_STATE_FILE} holds no self-refining diffusion state, though the "
            "run's config enables it; sample another checkpoint or the exported pipeline (leave out --checkpoint)"
        )
    return state["fam"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/ddpm_digits")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    parser.add_argument("--checkpoint", default="", help="'latest', 'best' or step_<N>; default: the exported pipeline")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)  # OMP_NUM_THREADS if set, else half the CPUs: robust to other load
    for flag, value, low in (("--num-images", args.num_images, 1), ("--steps", args.steps, 1), ("--eta", args.eta, 0)):
        if not value >= low:
            raise ConfigError(f"{flag}={value}: must be >= {low}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out={args.out}: is a file; give a folder (it is created if missing)")
    if not args.run_dir.is_dir():
        raise ConfigError(
            f"run directory '{args.run_dir}' does not exist; give the folder of a trained run, e.g. runs/ddpm_digits"
        )

    if not (args.run_dir / "config.yaml").is_file():
        raise ConfigError(f"'{args.run_dir}' has no config.yaml: not a run folder; give the folder of a trained run")
    if "unet" not in (read_yaml(args.run_dir / "config.yaml") or {}):
        raise ConfigError(
            f"'{args.run_dir}' is not a diffusion run (its config.yaml has no unet section); sample.py samples "
            "runs of recipes/train_diffusion.py (a GAN run's samples are in its samples/ and samples.png)"
        )
    config = load_config(DiffusionExperiment, args.run_dir / "config.yaml")
    if args.steps > config.scheduler.num_train_timesteps:
        raise ConfigError(
            f"--steps={args.steps}: the run was trained with {config.scheduler.num_train_timesteps} noise levels; "
            f"use at most that many DDIM steps"
        )
    if args.checkpoint:
        folder = checkpoint_folder(args.run_dir, args.checkpoint, fix=NO_CHECKPOINT_FIX)
        pipeline = pipeline_from_checkpoint(config, folder)
    else:
        pipeline = load_pipeline(args.run_dir / "pipeline")
    device = "cuda" if torch.cuda.is_available() and not config.run.cpu else "cpu"
    pipeline.to(device)
    images = sample_pipeline(pipeline, args.num_images, args.steps, args.seed, args.eta)  # (N, H, W, C) in [0, 1]

    out = args.out or args.run_dir / "sampled" / f"seed{args.seed}_steps{args.steps}"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "samples.npz", images=images, seed=args.seed, steps=args.steps)
    save_png(make_grid(rearrange(torch.from_numpy(images), "n h w c -> n c h w")), out / "samples.png")
    print(f"{len(images)} samples ({type(pipeline).__name__}, {args.steps} DDIM steps, seed {args.seed}) -> {out}")
    return out


if __name__ == "__main__":
    run_main(main, user_errors=(FileNotFoundError,))  # one "error: ..." line, exit code 2 (--debug: traceback)
