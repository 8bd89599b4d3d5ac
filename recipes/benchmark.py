"""Overhead of explanation-guided training, memory over a run, and step time under CPU contention.

    python recipes/benchmark.py                                   # GAN suite: DCGAN + paper MLP, batch 64 and 128
    python recipes/benchmark.py --arch paper_mlp --batch-sizes 128 --methods saliency deeplift_shap --shap-baselines 128
    python recipes/benchmark.py --arch paper_mlp --batch-sizes 64 --memory-steps 500 --markdown docs/bench/gan.md
    python recipes/benchmark.py --suite diffusion --batch-sizes 32   # plain vs D + saliency per mode
    python recipes/benchmark.py --suite contention                   # thread policies: idle vs beside a busy process
    accelerate launch recipes/benchmark.py --mixed-precision bf16   # on a GPU

Suites (``--suite``), each a function ``args -> Markdown`` registered in ``SUITES`` at the bottom — a new
suite is one function and one line there:
- ``gan``: the full trainer step (D update + G update, explainer inside the G step) per explainer, arms
  timed round-robin so every ratio to vanilla comes from the same run; median of --steps rounds after
  --warmup. Every arm explains all B fakes of a step. DCGAN arms use ``configs/gan/dcgan_digits.yaml``'s
  recipe (width --width); paper-MLP arms use ``configs/gan/xaigan_paper_digits.yaml``'s (betas (0.5, 0.99),
  labels 0.9/0.1, G clipped at 10, dropout 0.3). SHAP explainers use --shap-baselines real images, all of
  them. With --memory-steps N every arm then runs N more steps with its RSS sampled every --memory-every
  steps; the least-squares slope (MiB per 100 steps) shows a slow leak.
- ``diffusion``: plain diffusion step vs D update + saliency per importance mode and the self-refining (SRD)
  arms, same UNet; replay-buffer refills and SRD's FAM refreshes timed apart; sampling time per image.
- ``contention``: each thread policy in a fresh process on the demo's DCGAN, steps timed alternately idle
  and beside --burners busy processes; the ratio contended / idle should stay <= ~2.
- ``cams``: each CAM per call on a DCGAN D (batch --batch-sizes[0], width --width) in units of one D
  forward + backward, all gradient CAMs from one pass, batched ScoreCAM/AblationCAM vs a per-image loop of the
  same method, and the trainer step with ``xai.method=gradcampp`` / ``layercam`` vs vanilla.

Threads: ``--threads N`` (or ``XAI_TRAIN_THREADS``; see ``xai_train/threads.py``) for this process.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (xai_train/threads.py says why)

import argparse
import dataclasses
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from callbacks import ImportanceNoiseSchedule, ImportanceWeightedLoss, SelfRefiningDiffusion, XAIGradientMask
from xai_train.atomic import atomic_write
from xai_train.benchmarks import (
    compare_policies,
    default_policies,
    make_diffusion_arm,
    make_gan_arm,
    markdown_table,
    one_step,
    refill_seconds_per_step,
    sampling_seconds_per_image,
    synchronize,
    time_interleaved,
    trace_rss,
)
from xai_train.benchmarks import step_fn as diffusion_step_fn
from xai_train.benchmarks.cams import UNIT, cam_arms, per_image_loops
from xai_train.cli import run_main
from xai_train.config import load_config
from xai_train.config.diffusion import DiscriminatorConfig
from xai_train.config.gan import GANExperiment
from xai_train.data import build_dataset
from xai_train.explain.cams import CAM_METHODS
from xai_train.models import build_gan
from xai_train.threads import configure_threads
from xai_train.trainers.diffusion import DiffusionTrainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "gan"
ARCH_RECIPES = {"dcgan": CONFIGS / "dcgan_digits.yaml", "paper_mlp": CONFIGS / "xaigan_paper_digits.yaml"}
DEFAULT_METHODS = ("grad", "saliency", "input_x_gradient", "deeplift", "gradcam", "smoothgrad", "deeplift_shap")
SHAP_METHODS = ("deeplift_shap", "gradient_shap")
# CAMs need a convolutional feature map (B, K, h, w): not defined on the paper's MLP (FullGrad uses biases only)
SPATIAL_ONLY = ("gradcam", *(name for name in CAM_METHODS if name != "fullgrad"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="gan", choices=sorted(SUITES))
    parser.add_argument("--arch", nargs="+", default=["dcgan", "paper_mlp"], choices=sorted(ARCH_RECIPES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--width", type=int, default=64, help="DCGAN base width (64 = the classic DCGAN)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=0, help="steps per arm for the RSS trace (0 = skip)")
    parser.add_argument("--memory-every", type=int, default=10, help="RSS sampling interval in steps")
    parser.add_argument("--shap-baselines", type=int, default=16, help="real images used (all) by SHAP methods")
    parser.add_argument("--image-size", type=int, default=32, help="diffusion suite: image side")
    parser.add_argument("--unet-widths", nargs="+", type=int, default=[32, 64, 64], help="diffusion suite")
    parser.add_argument("--refill-size", type=int, default=32, help="diffusion suite: samples per buffer refill")
    parser.add_argument("--sampling-steps", type=int, default=50, help="diffusion suite: DDIM steps when sampling")
    parser.add_argument("--burners", type=int, default=1, help="contention suite: busy processes beside a step")
    parser.add_argument("--contention-steps", type=int, default=6, help="contention suite: steps per block")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--threads", help="torch threads for this process (a number or 'auto')")
    parser.add_argument("--markdown", type=Path, help="also write the table(s) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    print(configure_threads(args.threads).describe(), flush=True)
    text = SUITES[args.suite](args)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.markdown, text + "\n")
    return text


def gan_callbacks(method: str | None, images: torch.Tensor, shap_baselines: int) -> list:
    """The arm's callbacks: none for vanilla, else the gradient mask with ``method`` (defaults otherwise)."""
    if method is None:
        return []
    options = {}
    if method in SHAP_METHODS:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:shap_baselines]
        options["baselines"] = images[pick]
    return [XAIGradientMask(method, options)]


def arm_name(method: str | None, args: argparse.Namespace) -> str:
    if method is None:
        return "vanilla"
    return f"{method} ({args.shap_baselines} baselines)" if method in SHAP_METHODS else method


def gan_suite(args: argparse.Namespace) -> str:
    """Vanilla vs each explainer, per architecture and batch size."""
    images = build_dataset("digits", image_size=32).images
    rows, memory_rows, device = [], [], None
    for arch in args.arch:
        recipe = load_config(GANExperiment, ARCH_RECIPES[arch])
        model_options = {"dropout": recipe.model.dropout}
        if arch == "dcgan":
            model_options = {"g_width": args.width, "d_width": args.width}
        for batch_size in args.batch_sizes:
            train = dataclasses.replace(recipe.train, batch_size=batch_size, mixed_precision=args.mixed_precision)
            skipped = [m for m in args.methods if arch == "paper_mlp" and m in SPATIAL_ONLY]
            if skipped:
                print(f"{arch}: skipping {', '.join(skipped)} (CAMs need a convolutional feature map)", flush=True)
            methods = [None] + [m for m in args.methods if m not in skipped]
            arms = {
                arm_name(m, args): make_gan_arm(
                    arch,
                    images,
                    train,
                    callbacks=gan_callbacks(m, images, args.shap_baselines),
                    model_options=model_options,
                    cpu=args.cpu,
                )
                for m in methods
            }
            device = arms["vanilla"].accelerator.device
            print(f"{arch} batch {batch_size}: timing {len(arms)} arms x {args.steps} rounds", flush=True)
            steps = {name: one_step(trainer) for name, trainer in arms.items()}
            timings = time_interleaved(steps, steps=args.steps, warmup=args.warmup, device=device)
            base = timings["vanilla"].median
            for name, timing in timings.items():
                print(f"  {name}: {timing.median * 1000:.1f} ms ({timing.median / base:.2f}x)", flush=True)
                peak = "-" if timing.peak_mb != timing.peak_mb else f"{timing.peak_mb:.0f}"
                ms, per_sample = timing.median * 1000, timing.median * 1000 / batch_size
                rows.append(
                    [arch, batch_size, name, f"{ms:.1f}", f"{per_sample:.2f}", f"{timing.median / base:.2f}x", peak]
                )
            if args.memory_steps > 0:
                for name, step in steps.items():
                    trace = trace_rss(step, args.memory_steps, every=args.memory_every)
                    slope = trace.slope_mb_per_100_steps
                    print(f"  memory {name}: {trace.start:.0f} -> {trace.end:.0f} MiB, {slope:+.2f} MiB/100 steps")
                    memory_rows.append(
                        [arch, batch_size, name, args.memory_steps, len(trace.mb), f"{trace.start:.0f}",
                         f"{trace.end:.0f}", f"{trace.peak:.0f}", f"{slope:+.2f}"]
                    )  # fmt: skip
            del arms, steps

    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {device}"
    text = (
        f"GAN step time ({where}, mixed precision {args.mixed_precision}); median of {args.steps} interleaved "
        f"rounds after {args.warmup} warm-up; every arm explains all B fakes per step\n\n"
    )
    header = ["arch", "batch", "explainer", "step ms", "ms / sample", "vs vanilla", "peak MiB (GPU)"]
    text += markdown_table(header, rows)
    if memory_rows:
        text += (
            f"\n\nResident memory over {args.memory_steps} consecutive steps per arm, sampled every "
            f"{args.memory_every} steps; slope = least-squares growth (a leak shows as a steady positive slope)\n\n"
        )
        header = ["arch", "batch", "explainer", "steps", "samples", "RSS start MiB", "RSS end MiB", "RSS peak MiB"]
        text += markdown_table([*header, "slope MiB/100 steps"], memory_rows)
    return text


SRD_ARMS: dict[str, dict] = {
    "srd_reference": {},
    "srd_per_sample": {"fam_reduce": "per_sample"},
    "srd_online_fh": {"highlighter_training": "online"},
}
"""Self-refining diffusion arms (the authors' semantics unless stated); FAM refreshes are timed apart."""


def add_srd_arm(arms: dict, name: str, images: torch.Tensor, common: dict, **options) -> SelfRefiningDiffusion:
    """A self-refining arm in its refinement phase (its first, warm-up step trains the FH and makes a FAM)."""
    arm: list[DiffusionTrainer] = []
    callback = SelfRefiningDiffusion(
        lambda n, steps, generator: arm[0].sample(n, steps, generator), images, first_process=0, fam_cycle=10**9,
        num_samples=common["batch_size"], highlighter_samples=64, highlighter_epochs=5, **options,
    )  # fmt: skip
    arms[name] = make_diffusion_arm(images, callbacks=lambda alphas, _: [callback], **common)
    arm.append(arms[name])
    arms[name].callbacks.on_train_start(arms[name].state)  # installs the attention processor
    return callback


def fam_refresh_seconds_per_step(trainer: DiffusionTrainer, callback: SelfRefiningDiffusion, cycle: int) -> float:
    """One FAM refresh (EMA samples with DDIM + Grad-CAM + mean), spread over ``cycle`` steps (the authors' 100).

    Per-sample maps are made inside every step (timed there): no refresh, 0.
    """
    if callback.fam_reduce != "batch_mean":
        return 0.0
    synchronize(trainer.accelerator.device)  # on CUDA: time the refresh's kernels, not their launches
    start = time.perf_counter()
    callback.refresh_fam(trainer.state)
    synchronize(trainer.accelerator.device)
    return (time.perf_counter() - start) / cycle


def diffusion_suite(args: argparse.Namespace) -> str:
    """Plain diffusion step vs D update + saliency per mode (batch --batch-sizes[0], same UNet)."""
    batch_size, size = args.batch_sizes[0], args.image_size
    images = build_dataset("digits", image_size=size).images
    disc = DiscriminatorConfig(enabled=True, buffer_refresh_size=args.refill_size)

    def noise(mode: str) -> Callable:
        return lambda alphas, _: [ImportanceNoiseSchedule(alphas, mode=mode)]

    common = dict(
        batch_size=batch_size,
        block_out_channels=tuple(args.unet_widths),
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
    )
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
    srd = {name: add_srd_arm(arms, name, images, common, **options) for name, options in SRD_ARMS.items()}
    device = arms["plain"].accelerator.device
    refill = {name: refill_seconds_per_step(t, disc.buffer_refresh_every) for name, t in arms.items()}
    print(f"diffusion batch {batch_size}: timing {len(arms)} arms x {args.steps} rounds", flush=True)
    steps = {name: diffusion_step_fn(t) for name, t in arms.items()}
    timings = time_interleaved(steps, steps=args.steps, warmup=args.warmup, device=device)
    refill.update({name: fam_refresh_seconds_per_step(arms[name], cb, 100) for name, cb in srd.items()})
    base = timings["plain"].median
    rows = []
    for name, timing in timings.items():
        total = timing.median + refill[name]
        rows.append([name, f"{timing.median * 1000:.0f}", f"{refill[name] * 1000:.0f}", f"{total / base:.2f}x"])
    plain_s = sampling_seconds_per_image(arms["plain"], num_inference_steps=args.sampling_steps)
    importance_s = sampling_seconds_per_image(arms["xai_noise"], num_inference_steps=args.sampling_steps)
    text = (
        f"Diffusion step time, batch {batch_size}, {size}x{size} digits, UNet {tuple(args.unet_widths)}, device "
        f"{device}, {torch.get_num_threads()} torch threads, mixed precision {args.mixed_precision}; median of "
        f"{args.steps} interleaved rounds after {args.warmup} warm-up; replay-buffer refills (every "
        f"{disc.buffer_refresh_every} steps) and SRD's FAM refreshes (every 100 steps, {batch_size} EMA samples, "
        "25 DDIM steps, Grad-CAM; FH trained before timing) are timed apart and spread over the interval\n\n"
    )
    text += markdown_table(["arm", "step ms", "buffer refill / FAM refresh ms/step", "vs plain (incl. refill)"], rows)
    text += f"\n\nBuffer refills draw {args.refill_size} samples with {disc.sample_steps} DDIM steps. "
    text += f"Sampling, {args.sampling_steps} DDIM steps: plain {plain_s:.3f} s/image, "
    text += f"importance-scheduled {importance_s:.3f} s/image"
    return text


def contention_suite(args: argparse.Namespace) -> str:
    """Each thread policy in a fresh process: the demo step idle and beside --burners busy processes."""
    policies = default_policies()
    print(f"contention: {len(policies)} policies, {args.burners} burner(s), load {os.getloadavg()[0]:.1f}", flush=True)
    results = compare_policies(
        policies,
        steps=args.contention_steps,
        rounds=2,
        burners=args.burners,
        progress=lambda line: print(line, flush=True),
    )
    rows = [
        [name, r.threads, r.wait_policy or "(OpenMP default)", f"{r.idle_median * 1000:.0f}",
         f"{r.contended_median * 1000:.0f}", f"{r.ratio:.2f}x"]
        for name, r in results.items()
    ]  # fmt: skip
    text = (
        f"Demo step (DCGAN width 32, batch 64, 32x32 digits, CPU) per thread policy, each in a fresh process; "
        f"median of 2 x {args.contention_steps} steps idle and beside {args.burners} busy process(es), alternating; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n\n"
    )
    header = ["policy", "threads", "OMP_WAIT_POLICY", "idle ms", "contended ms", "contended / idle"]
    return text + markdown_table(header, rows)


def cams_suite(args: argparse.Namespace) -> str:
    """Each CAM per call (x one D fwd+bwd), batched vs per-image loops, and the trainer step with a CAM."""
    batch_size, width = args.batch_sizes[0], args.width
    images = build_dataset("digits", image_size=32).images
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.manual_seed(0)
    discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=width, d_width=width)[1].to(device)
    batch = images[:batch_size].to(device)
    print(f"cams: DCGAN D width {width}, batch {batch_size}, {args.steps} rounds", flush=True)
    calls = time_interleaved(cam_arms(discriminator, batch), steps=args.steps, warmup=args.warmup, device=device)
    loop_rounds = max(1, args.steps // 5)  # a per-image ScoreCAM loop takes seconds: fewer rounds
    loops = time_interleaved(per_image_loops(discriminator, batch), steps=loop_rounds, warmup=1, device=device)
    unit = calls[UNIT].median
    rows = [[name, f"{t.median * 1000:.1f}", f"{t.median / unit:.2f}x", ""] for name, t in calls.items()]
    for name, t in loops.items():
        batched = calls[name.split(" ")[0]].median
        rows.append([name, f"{t.median * 1000:.1f}", f"{t.median / unit:.1f}x", f"{t.median / batched:.1f}x"])
    recipe = load_config(GANExperiment, ARCH_RECIPES["dcgan"])
    train = dataclasses.replace(recipe.train, batch_size=batch_size, mixed_precision=args.mixed_precision)
    options = {"g_width": width, "d_width": width}
    arms = {
        name: make_gan_arm("dcgan", images, train, callbacks=gan_callbacks(method, images, 0), model_options=options,
                           cpu=args.cpu)
        for name, method in (("vanilla", None), ("gradcampp", "gradcampp"), ("layercam", "layercam"))
    }  # fmt: skip
    steps = {name: one_step(trainer) for name, trainer in arms.items()}
    trained = time_interleaved(steps, steps=args.steps, warmup=args.warmup, device=arms["vanilla"].accelerator.device)
    base = trained["vanilla"].median
    step_rows = [[name, f"{t.median * 1000:.1f}", f"{t.median / base:.2f}x"] for name, t in trained.items()]
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {device}"
    text = (
        f"CAM cost per call, DCGAN D (width {width}, 32x32, feature layer 4x4), batch {batch_size} ({where}); median "
        f"of {args.steps} interleaved rounds after {args.warmup} warm-up (per-image loops: {loop_rounds})"
        f"\n\n"
    )
    text += markdown_table(["arm", "ms / call", f"x {UNIT}", "loop / batched"], rows)
    text += f"\n\nTrainer step (D + G update), xai.method = a CAM (XAIGradientMask) vs vanilla, batch {batch_size}\n\n"
    return text + markdown_table(["arm", "step ms", "vs vanilla"], step_rows)


SUITES: dict[str, Callable[[argparse.Namespace], str]] = {
    "gan": gan_suite,
    "diffusion": diffusion_suite,
    "contention": contention_suite,
    "cams": cams_suite,
}


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
