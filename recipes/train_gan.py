"""Train a DCGAN or the xAI-GAN paper's MLP GAN, optionally with explanation-guided gradients.

    python recipes/train_gan.py --config configs/gan/dcgan_digits.yaml
    python recipes/train_gan.py --config configs/gan/dcgan_digits.yaml train.max_steps=200 data.name=shapes
    python recipes/train_gan.py --config configs/gan/dcgan_digits.yaml run.resume=auto
    accelerate launch --multi_gpu --num_processes 4 recipes/train_gan.py --config configs/gan/dcgan_digits.yaml
    torchrun --nproc_per_node 2 recipes/train_gan.py --config configs/gan/dcgan_digits.yaml   # 2 CPU processes
    python recipes/train_gan.py --config configs/gan/dcgan_digits.yaml --debug   # tracebacks of user errors too

Outputs go to <run.output_dir>/<run.name>/: config.yaml, tensorboard/, samples/, samples.png, checkpoints/,
with xai.enabled saliency_overlay.png (fakes with the discriminator's saliency as a heat map), and with
eval.enabled metrics.jsonl, best.json and checkpoints/best/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
from pathlib import Path

import torch

from callbacks import EvalMetrics, SaliencyLogger, XAIGradientMask
from xai_train.cli import run_main
from xai_train.config import load_config, to_dict
from xai_train.config.gan import GANExperiment
from xai_train.data import ImageDataset, build_dataset
from xai_train.models import build_gan
from xai_train.threads import configure_threads
from xai_train.trainers import GANTrainer

SHAP_METHODS = ("deeplift_shap", "gradient_shap")  # explain against real images as baselines


def build_callbacks(config: GANExperiment, dataset: ImageDataset) -> list:
    """The callbacks the config asks for: the xAI gradient mask, its logger, and the metrics."""
    callbacks = build_xai_callbacks(config, dataset)
    evaluation, data = config.eval, config.data
    if evaluation.enabled:
        callbacks.append(
            EvalMetrics(
                **evaluation.callback_kwargs(data, config.run.seed),
            )
        )
    return callbacks


def build_xai_callbacks(config: GANExperiment, dataset: ImageDataset) -> list:
    """The gradient mask and its TensorBoard logger, if ``xai.enabled``."""
    xai = config.xai
    if not xai.enabled:
        return []
    kwargs = xai.callback_kwargs()
    options = kwargs["explainer_options"]
    if xai.method in SHAP_METHODS and "baselines" not in options:
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.run.seed))
        # The reference code explains against its first real batch (128 images in the paper); its preset uses a
        # real batch of the same size (a seeded draw, not the identical images), every other run reference_baselines.
        count = config.train.batch_size if xai.preset == "reference" else xai.reference_baselines
        options["baselines"] = dataset.images[pick[:count]]
    mask = XAIGradientMask(**kwargs)
    callbacks = [mask]
    if xai.log_every > 0:
        callbacks.append(SaliencyLogger(xai.log_every, source=mask))
    return callbacks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (defaults apply to missing keys)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)  # OMP_NUM_THREADS if set, else half the CPUs: robust to other load
    config = load_config(GANExperiment, args.config, args.overrides)

    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    data = config.data
    dataset = build_dataset(**data.dataset_kwargs(config.run.seed))
    model = config.model
    generator, discriminator = build_gan(
        model.arch,
        image_size=data.image_size,
        channels=data.channels,
        latent_dim=model.latent_dim,
        g_width=model.g_width,
        d_width=model.d_width,
        g_norm=model.g_norm,
        d_norm=model.d_norm,
        dropout=model.dropout,
    )
    trainer = GANTrainer(
        generator,
        discriminator,
        dataset.images,
        config.train,
        callbacks=build_callbacks(config, dataset),
        run_dir=Path(config.run.output_dir) / config.run.name,
        seed=config.run.seed,
        resume=config.run.resume,
        run_config=to_dict(config),
        cpu=config.run.cpu,
    )
    trainer.accelerator.print(threads.describe())
    summary = trainer.train()
    trainer.accelerator.print(
        f"done: {summary['steps']} steps, median step {summary['median_step_time'] * 1000:.1f} ms, "
        f"run directory {summary['run_dir']}"
    )
    return summary


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
