"""Overhead of explanation-guided training: GAN step time per explainer, ratios to vanilla, memory.

    python recipes/benchmark.py                                   # DCGAN + paper MLP, batch 64 and 128
    python recipes/benchmark.py --arch paper_mlp --batch-sizes 128 --methods grad saliency deeplift_shap
    python recipes/benchmark.py --memory-steps 500 --markdown docs/benchmarks/gan.md
    python recipes/benchmark.py --suite diffusion --batch-sizes 32   # plain vs D + saliency per mode
    accelerate launch recipes/benchmark.py --mixed-precision bf16   # on a GPU

Each row times the full trainer step (D update + G update, with the explainer inside the G step), round-
robin over the arms so every ratio to vanilla comes from the same run. The median of --steps rounds after
--warmup rounds is reported. With --memory-steps N every arm also runs N steps in a row and the resident
memory (RSS) at its start and end is reported: a leak (e.g. attributions that keep their autograd graph)
shows as growth.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from callbacks import ImportanceNoiseSchedule, ImportanceWeightedLoss, XAIGradientMask
from xai_train.benchmark import markdown_table, rss_mb, time_interleaved
from xai_train.cli import run_main
from xai_train.config.diffusion import DiscriminatorConfig
from xai_train.config.gan import GANTrainConfig
from xai_train.data import build_dataset
from xai_train.diffusion.benchmark import make_diffusion_arm, refill_seconds_per_step, sampling_seconds_per_image
from xai_train.diffusion.benchmark import step_fn as diffusion_step_fn
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

DEFAULT_METHODS = (
    "grad",
    "saliency",
    "input_x_gradient",
    "deeplift",
    "gradcam",
    "smoothgrad",
    "deeplift_shap",
)
SHAP_METHODS = ("deeplift_shap", "gradient_shap")
SPATIAL_ONLY = ("gradcam",)  # needs a convolutional feature map: not defined on the paper's MLP


def make_arm(arch: str, batch_size: int, method: str | None, images: torch.Tensor, args) -> GANTrainer:
    """A trainer whose ``train_step`` is one timed step; ``method=None`` is vanilla."""
    torch.manual_seed(0)
    width = args.width
    generator, discriminator = build_gan(arch, image_size=32, channels=1, g_width=width, d_width=width)
    callbacks = []
    if method is not None:
        options = {"baselines": images[: args.shap_baselines]} if method in SHAP_METHODS else {}
        callbacks.append(XAIGradientMask(method, options))
    config = GANTrainConfig(
        batch_size=batch_size, max_steps=10**9, mixed_precision=args.mixed_precision, sample_every=0
    )
    return GANTrainer(generator, discriminator, images, config, callbacks=callbacks, cpu=args.cpu)


def one_step(trainer: GANTrainer):
    def step() -> None:
        trainer.train_step()
        trainer.state.step += 1

    return step


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["dcgan", "paper_mlp"], choices=["dcgan", "paper_mlp"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--width", type=int, default=64, help="DCGAN base width (64 = the classic DCGAN)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=0, help="steps per arm for the RSS check (0 = skip)")
    parser.add_argument("--shap-baselines", type=int, default=8)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table(s) here")
    parser.add_argument("--suite", default="gan", choices=["gan", "diffusion"])
    args = parser.parse_args(argv)
    text = gan_suite(args) if args.suite == "gan" else diffusion_suite(args)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return text


def diffusion_suite(args) -> str:
    """Plain diffusion step vs D update + saliency per mode (batch --batch-sizes[0], 32x32, same UNet)."""
    batch_size = args.batch_sizes[0]
    images = build_dataset("digits", image_size=32).images
    disc = DiscriminatorConfig(enabled=True)

    def noise(mode: str):
        return lambda alphas, _: [ImportanceNoiseSchedule(alphas, mode=mode)]

    common = dict(batch_size=batch_size, mixed_precision=args.mixed_precision, cpu=args.cpu)
    arms = {
        "plain": make_diffusion_arm(images, **common),
        "D only": make_diffusion_arm(images, discriminator=disc, **common),
        "xai_weight": make_diffusion_arm(
            images, discriminator=disc, callbacks=lambda alphas, _: [ImportanceWeightedLoss(start_step=0)], **common
        ),
        "xai_noise": make_diffusion_arm(
            images, discriminator=disc, callbacks=noise("pixel"), sampler=lambda cbs, d: cbs[0].sampler(d), **common
        ),
        "xai_curriculum": make_diffusion_arm(images, discriminator=disc, callbacks=noise("timesteps"), **common),
    }
    refill = {name: refill_seconds_per_step(t, disc.buffer_refresh_every) for name, t in arms.items()}
    print(f"diffusion batch {batch_size}: timing {len(arms)} arms x {args.steps} rounds", flush=True)
    timings = time_interleaved(
        {name: diffusion_step_fn(t) for name, t in arms.items()}, steps=args.steps, warmup=args.warmup
    )
    base = timings["plain"].median
    rows = []
    for name, timing in timings.items():
        total = timing.median + refill[name]
        rows.append([name, f"{timing.median * 1000:.0f}", f"{refill[name] * 1000:.0f}", f"{total / base:.2f}x"])
    plain_s = sampling_seconds_per_image(arms["plain"])
    importance_s = sampling_seconds_per_image(arms["xai_noise"])
    text = (
        f"Diffusion step time, batch {batch_size}, 32x32 digits, {torch.get_num_threads()} torch threads; median of "
        f"{args.steps} interleaved rounds after {args.warmup} warm-up; replay-buffer refills (every "
        f"{disc.buffer_refresh_every} steps) are timed apart and spread over the interval\n\n"
    )
    text += markdown_table(["arm", "step ms", "buffer refill ms/step", "vs plain (incl. refill)"], rows)
    text += f"\n\nSampling, 50 DDIM steps: plain {plain_s:.3f} s/image, importance-scheduled {importance_s:.3f} s/image"
    return text


def gan_suite(args) -> str:
    """Vanilla vs each explainer, per architecture and batch size."""
    images = build_dataset("digits", image_size=32).images
    rows, memory_rows = [], []
    device = None
    for arch in args.arch:
        for batch_size in args.batch_sizes:
            arms = {"vanilla": make_arm(arch, batch_size, None, images, args)}
            methods = [m for m in args.methods if not (arch == "paper_mlp" and m in SPATIAL_ONLY)]
            arms.update({m: make_arm(arch, batch_size, m, images, args) for m in methods})
            device = arms["vanilla"].accelerator.device
            print(f"{arch} batch {batch_size}: timing {len(arms)} arms x {args.steps} rounds", flush=True)
            timings = time_interleaved(
                {name: one_step(t) for name, t in arms.items()},
                steps=args.steps,
                warmup=args.warmup,
                device=device,
            )
            base = timings["vanilla"].median
            for name, timing in timings.items():
                print(f"  {name}: {timing.median * 1000:.1f} ms ({timing.median / base:.2f}x)", flush=True)
                rows.append(
                    [
                        arch,
                        batch_size,
                        name,
                        f"{timing.median * 1000:.1f}",
                        f"{timing.median / base:.2f}x",
                        "-" if timing.peak_mb != timing.peak_mb else f"{timing.peak_mb:.0f}",
                    ]
                )
            if args.memory_steps > 0:
                for name, trainer in arms.items():
                    step = one_step(trainer)
                    step()
                    start = rss_mb()
                    for _ in range(args.memory_steps):
                        step()
                    end = rss_mb()
                    memory_rows.append(
                        [
                            arch,
                            batch_size,
                            name,
                            args.memory_steps,
                            f"{start:.0f}",
                            f"{end:.0f}",
                            f"{end - start:+.0f}",
                        ]
                    )
                    print(f"  memory {name}: {start:.0f} -> {end:.0f} MiB", flush=True)
            del arms

    threads = torch.get_num_threads()
    where = f"{platform.processor() or platform.machine()}, {threads} torch threads, device {device}"
    text = f"GAN step time ({where}); median of {args.steps} interleaved rounds after {args.warmup} warm-up\n\n"
    text += markdown_table(["arch", "batch", "explainer", "step ms", "vs vanilla", "peak MiB (GPU)"], rows)
    if memory_rows:
        text += "\n\nResident memory over consecutive steps (a leak shows as growth)\n\n"
        text += markdown_table(
            ["arch", "batch", "explainer", "steps", "RSS start MiB", "RSS end MiB", "change"], memory_rows
        )
    return text


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
