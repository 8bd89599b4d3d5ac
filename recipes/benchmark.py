"""Overhead of explanation-guided training: GAN step time per explainer, ratios to vanilla, memory.

    python recipes/benchmark.py                                   # DCGAN + paper MLP, batch 64 and 128
    python recipes/benchmark.py --arch paper_mlp --batch-sizes 128 --methods grad saliency deeplift_shap
    python recipes/benchmark.py --memory-steps 500 --markdown docs/benchmark_gan.md
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

from callbacks import XAIGradientMask
from xai_train.benchmark import markdown_table, rss_mb, time_interleaved
from xai_train.config.gan import GANTrainConfig
from xai_train.data import build_dataset
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", default=["dcgan", "paper_mlp"], choices=["dcgan", "paper_mlp"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--width", type=int, default=64, help="DCGAN base width (64 = the classic DCGAN)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--memory-steps", type=int, default=0, help="steps per arm for the RSS check (0 = skip)"
    )
    parser.add_argument("--shap-baselines", type=int, default=8)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table(s) here")
    args = parser.parse_args(argv)

    images = build_dataset("digits", image_size=32).images
    rows, memory_rows = [], []
    device = None
    for arch in args.arch:
        for batch_size in args.batch_sizes:
            arms = {"vanilla": make_arm(arch, batch_size, None, images, args)}
            arms.update({m: make_arm(arch, batch_size, m, images, args) for m in args.methods})
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
    text = (
        f"GAN step time ({where}); median of {args.steps} interleaved rounds after {args.warmup} warm-up\n\n"
    )
    text += markdown_table(["arch", "batch", "explainer", "step ms", "vs vanilla", "peak MiB (GPU)"], rows)
    if memory_rows:
        text += "\n\nResident memory over consecutive steps (a leak shows as growth)\n\n"
        text += markdown_table(
            ["arch", "batch", "explainer", "steps", "RSS start MiB", "RSS end MiB", "change"], memory_rows
        )
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
