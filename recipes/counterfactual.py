"""Explain a classifier with a trained generator: manifold counterfactuals, GANMEX baselines or AttFind.

    python recipes/counterfactual.py --classifier digits --generator runs/demo --method manifold
    python recipes/counterfactual.py --classifier digits --generator flow --method manifold     # RealNVP on 8×8 digits
    python recipes/counterfactual.py --classifier digits --generator runs/ddpm_digits --method manifold --ddim-steps 10
    python recipes/counterfactual.py --classifier digits --generator runs/demo --method ganmex
    python recipes/counterfactual.py --classifier digits --generator runs/demo --method ganmex --translator-steps 400
    python recipes/counterfactual.py --classifier digits --generator runs/demo --method attfind --layer project
    python recipes/counterfactual.py --classifier digits --generator runs/demo --method manifold --target 3 --steps 500

``--generator`` is a GAN run of recipes/train_gan.py (G and D from its latest checkpoint), ``flow``: a RealNVP
fitted to the 8×8 digits (trained on first use, then loaded from ``--flow-path``), or (manifold only) a diffusion
run of recipes/train_diffusion.py: its exported UNet with DDIM inversion (``--ddim-steps``; slow on a CPU).
``--classifier`` is a dataset name (the project's cached classifier) or a FeatureClassifier ``.safetensors``
with its ``.json``.
Default target: (predicted class + 1) mod K. Outputs in <out> (default <run>/counterfactual/<method>):
panel.png (AttFind: attfind_class<c>_rank<r>.png), summary.csv, tensorboard/. Method details: docs/counterfactuals.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.tensorboard import SummaryWriter

from xai_train.atomic import atomic_write
from xai_train.cli import count, run_main
from xai_train.config import load_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.counterfactual import (
    FlowDecoder,
    GANDecoder,
    RealNVP,
    checkerboard,
    manifold_counterfactuals,
    pixel_adversarial,
    train_flow,
)
from xai_train.counterfactual.attfind import attfind, channel_effects, channel_ranges, shifted_images
from xai_train.counterfactual.diffusion import DiffusionDecoder
from xai_train.counterfactual.ganmex import class_attribution, latent_baseline, simple_baselines, train_translator
from xai_train.counterfactual.oracle import oracle_agreement, train_oracle
from xai_train.counterfactual.report import heat, load_classifier, save_panel, write_rows
from xai_train.data import build_dataset
from xai_train.diffusion.pipeline import load_pipeline
from xai_train.errors import UserError
from xai_train.generator.run import load_gan_run
from xai_train.images import make_grid, to_unit_range
from xai_train.threads import configure_threads

METHODS = ("manifold", "ganmex", "attfind")
FLOW = dict(num_couplings=8, hidden=128, steps=2000, lr=2e-3, dequantize=2 / 16)  # 17 grey levels -> 2/16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", required=True, help="digits | shapes | parts_shapes | <file>.safetensors")
    parser.add_argument("--generator", required=True, help="a GAN run directory, or 'flow'")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--num-images", type=count, default=64)
    parser.add_argument("--target", type=int, default=None, help="target class; default (prediction + 1) mod K")
    parser.add_argument("--steps", type=int, default=200, help="counterfactual / GANMEX optimisation steps")
    parser.add_argument("--lr", type=float, default=None, help="default: 5e-2 (flow, GAN on CPU), 0.05 (GANMEX)")
    parser.add_argument("--inversion-steps", type=int, default=200, help="GAN inversion cap (paper: 5000)")
    parser.add_argument("--ddim-steps", type=count, default=10, help="diffusion run: DDIM steps of g and g⁻¹")
    parser.add_argument("--adversarial-lr", type=float, default=5e-4, help="pixel attack (the authors' 5e-4)")
    parser.add_argument("--adversarial-steps", type=int, default=1000)
    parser.add_argument(
        "--layer",
        default="latent",
        help="AttFind: 'latent' (z's coordinates) or a module of G whose channels shift, e.g. project",
    )
    parser.add_argument("--top-k", type=count, default=8, help="AttFind: attributes per class")
    parser.add_argument(
        "--sim-weight", type=float, default=0.01, help="GANMEX: weight of ‖x − x̂‖₁ (paper: 1; see the docs)"
    )
    parser.add_argument(
        "--translator-steps", type=int, default=0, help="GANMEX: train the amortised translator this long (0: latent)"
    )
    parser.add_argument("--attribution", default="integrated_gradients", help="GANMEX: explainer to compare")
    parser.add_argument("--flow-path", type=Path, default=Path("runs/flow_digits/flow.safetensors"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    return parser.parse_args(argv)


def flow_decoder(path: Path, image_size: int) -> tuple[FlowDecoder, dict]:
    """The digits RealNVP: loaded from ``path``, or trained (and saved with its training time) on first use."""
    low = build_dataset("digits", image_size=8).images.flatten(1)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        flow = RealNVP(64, meta["num_couplings"], meta["hidden"], checkerboard(8, 8))
        flow.load_state_dict(load_file(path))
    else:
        start = time.perf_counter()
        flow = train_flow(low, mask=checkerboard(8, 8), progress=True, **FLOW)
        meta = {**FLOW, "train_time_s": time.perf_counter() - start}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(flow.state_dict(), str(path))
        atomic_write(meta_path, json.dumps(meta, indent=2))
    meta["log_prob_per_dim"] = float(flow.eval().log_prob(low).mean() / 64)  # nats, images in [-1, 1]
    return FlowDecoder(flow.requires_grad_(False), shape=(1, 8, 8), image_size=image_size), meta


def is_diffusion_run(run_dir: Path) -> bool:
    """True if ``<run>/config.yaml`` has the sections of recipes/train_diffusion.py (``unet``, ``scheduler``)."""
    config_file = run_dir / "config.yaml"
    raw = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    return isinstance(raw, dict) and ("unet" in raw or "scheduler" in raw)


def diffusion_decoder(run_dir: Path, steps: int) -> tuple[DiffusionDecoder, object]:
    """The run's exported UNet as a DDIM decoder (ε-prediction only) and the run's data section."""
    config = load_config(DiffusionExperiment, run_dir / "config.yaml")
    pipeline = load_pipeline(run_dir / "pipeline")
    if pipeline.scheduler.config.prediction_type != "epsilon":
        raise UserError(
            f"'{run_dir}' predicts {pipeline.scheduler.config.prediction_type!r}; DDIM inversion here needs 'epsilon'"
        )
    return DiffusionDecoder(pipeline.unet, pipeline.scheduler.alphas_cumprod, steps), config.data


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configure_threads(args.threads)
    torch.manual_seed(args.seed)

    # The generator (and, for a GAN, its discriminator as GANMEX's realism critic) and the data it models.
    if args.generator == "flow":
        if args.method != "manifold":
            raise UserError(f"--method {args.method} needs a GAN run as --generator; the flow serves 'manifold'")
        dataset_name, image_size, channels, critic, G = "digits", 32, 1, None, None
        decoder, flow_info = flow_decoder(args.flow_path, image_size)
        print(f"flow: {flow_info}")
        out = args.out or args.flow_path.parent / "counterfactual" / args.method
    elif is_diffusion_run(Path(args.generator)):  # DDIM inversion; per-pixel-noise pipelines use their UNet
        if args.method != "manifold":
            raise UserError(f"--method {args.method} needs a GAN run; a diffusion run serves 'manifold'")
        decoder, data = diffusion_decoder(Path(args.generator), args.ddim_steps)
        dataset_name, image_size, channels, critic, G = data.name, data.image_size, data.channels, None, None
        out = args.out or Path(args.generator) / "counterfactual" / args.method
    else:
        run = load_gan_run(args.generator)  # G (EMA weights if the run kept them) and D of the latest checkpoint
        G, critic, data = run.generator, run.discriminator, run.config.data
        if critic is None and args.method == "ganmex":
            raise UserError(f"'{args.generator}' holds no discriminator: GANMEX needs D as its realism critic")
        dataset_name, image_size, channels = data.name, data.image_size, data.channels
        decoder = GANDecoder(G, max_steps=args.inversion_steps, progress=True)
        out = args.out or Path(args.generator) / "counterfactual" / args.method
    classifier = load_classifier(args.classifier, image_size, channels)
    dataset = build_dataset(dataset_name, image_size=image_size, channels=channels)
    with torch.no_grad():
        num_classes = classifier(dataset.images[:1]).shape[1]
    if args.target is not None and not 0 <= args.target < num_classes:
        raise UserError(f"unknown target class {args.target}; the classifier has classes 0..{num_classes - 1}")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[: args.num_images]
    images = dataset.images[pick]
    with torch.no_grad():
        predicted = classifier(images).argmax(dim=1)
    targets = (predicted + 1) % num_classes if args.target is None else torch.full_like(predicted, args.target)
    writer = SummaryWriter(str(out / "tensorboard"))
    rows: list[dict[str, object]] = []

    if args.method == "manifold":
        # Counterfactuals on the manifold vs pixel-space adversarial examples, judged by an independent oracle.
        if dataset.labels is None:
            raise UserError(f"dataset {dataset_name!r} has no labels: the oracle classifier needs them")
        oracle, oracle_accuracy = train_oracle(dataset.images, dataset.labels, seed=args.seed + 1)
        start = time.perf_counter()
        latents = decoder.encode(images)
        inversion_s = time.perf_counter() - start
        lr = args.lr or 5e-2
        results = {
            "manifold": manifold_counterfactuals(
                classifier, decoder, images, targets, latents=latents, lr=lr, max_steps=args.steps, progress=True
            ),
        }
        counterfactual_s = time.perf_counter() - start
        results["adversarial"] = pixel_adversarial(
            classifier, images, targets, lr=args.adversarial_lr, max_steps=args.adversarial_steps, progress=True
        )
        for name, result in results.items():
            change = result.counterfactuals - images
            rows.append(
                {
                    "method": name,
                    "generator": args.generator,
                    "images": len(images),
                    "success_rate": result.success.float().mean().item(),  # p_target >= 0.99
                    "flip_rate": (classifier(result.counterfactuals).argmax(dim=1) == targets).float().mean().item(),
                    "oracle_agreement": oracle_agreement(oracle, result.counterfactuals, targets).float().mean().item(),
                    "oracle_accuracy": oracle_accuracy,
                    "l1_per_pixel": change.abs().mean().item(),
                    "l2": change.flatten(1).norm(dim=1).mean().item(),
                    "mean_steps": result.steps.float().mean().item(),
                    "time_s": counterfactual_s if name == "manifold" else None,
                    "inversion_s": inversion_s if name == "manifold" else None,
                }
            )
        shown = slice(0, min(16, len(images)))
        panel = [
            ("original", images[shown]),
            ("counterfactual", results["manifold"].counterfactuals[shown]),
            ("|x - x'|", heat(results["manifold"].heatmaps[shown])),
            ("adversarial", results["adversarial"].counterfactuals[shown]),
            ("|x - x_adv|", heat(results["adversarial"].heatmaps[shown])),
        ]
        captions = [f"{p}→{t}" for p, t in zip(predicted[shown].tolist(), targets[shown].tolist(), strict=True)]
        save_panel(panel, out / "panel.png", captions)
        for label, row in panel:
            writer.add_image(f"counterfactual/{label}", make_grid(to_unit_range(row), nrow=len(row)))

    elif args.method == "ganmex":
        # Baselines for the predicted class: the closest realistic image the classifier calls the target class.
        start = time.perf_counter()
        if args.translator_steps > 0:  # the authors' amortised form: G(x, c) trained once for all images
            translator = train_translator(
                classifier, dataset.images, num_classes, steps=args.translator_steps, seed=args.seed, progress=True
            )
            with torch.no_grad():
                baseline = translator(images, targets)
        else:  # per-image search in the GAN's latent space
            baseline = latent_baseline(
                classifier,
                decoder,
                critic,
                images,
                targets,
                latents=decoder.encode(images),
                sim_weight=args.sim_weight,
                lr=args.lr or 0.05,
                steps=args.steps,
                progress=True,
            )
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            baseline_class = classifier(baseline).argmax(dim=1)
        baselines = {**simple_baselines(images, dataset.images.mean(dim=0)), "ganmex": baseline}
        maps = {}
        for name, value in baselines.items():
            attributions = torch.zeros_like(images)
            for c in predicted.unique().tolist():  # the explained class: the prediction
                sel = predicted == c
                attributions[sel] = class_attribution(
                    classifier, images[sel], c, args.attribution, baselines=value[sel]
                )
            maps[name] = attributions.abs().sum(dim=1)
            rows.append(
                {
                    "baseline": name,
                    "attribution": args.attribution,
                    "form": f"translator ({args.translator_steps} steps)" if args.translator_steps else "latent",
                    "sim_weight": None if args.translator_steps else args.sim_weight,
                    "images": len(images),
                    "baseline_is_target": (baseline_class == targets).float().mean().item()
                    if name == "ganmex"
                    else None,
                    "l1_per_pixel": (value - images).abs().mean().item(),
                    # Share of |attribution| on the pixels the GANMEX baseline changed most (its top 10%).
                    "mass_on_changed_pixels": _mass_on_top(maps[name], (baseline - images).abs().sum(dim=1), 0.1),
                    "time_s": elapsed if name == "ganmex" else None,
                }
            )
        shown = slice(0, min(16, len(images)))
        panel = [("original", images[shown]), ("GANMEX baseline", baseline[shown])]
        short = {"integrated_gradients": "IG", "deeplift": "DeepLift", "deeplift_shap": "DeepLiftShap"}
        panel += [
            (f"{short.get(args.attribution, args.attribution)}\n{name}", heat(maps[name][shown])) for name in baselines
        ]
        captions = [f"{p}→{t}" for p, t in zip(predicted[shown].tolist(), targets[shown].tolist(), strict=True)]
        save_panel(panel, out / "panel.png", captions)
        for label, row in panel:
            writer.add_image(f"ganmex/{label.replace(chr(10), ' ')}", make_grid(to_unit_range(row), nrow=len(row)))

    else:
        # AttFind on the channels of one generator layer, for every class (or the --target class).
        if args.layer == "latent":  # the latent coordinates themselves: the closest analogue of StylEX's styles
            G = torch.nn.Sequential(torch.nn.Identity(), G)
            G.latent_dim = G[1].latent_dim
        layers = {"latent": G[0], **dict(G.named_modules())} if args.layer == "latent" else dict(G.named_modules())
        if args.layer not in layers or not args.layer:
            names = ", ".join(name for name in layers if name)
            raise UserError(f"--layer {args.layer!r} is not a module of the generator; choose one of: {names}")
        layer = layers[args.layer]
        generator = torch.Generator().manual_seed(args.seed)
        population = torch.randn(512, G.latent_dim, generator=generator)
        latents = population[: args.num_images]
        start = time.perf_counter()
        ranges = channel_ranges(G, layer, population)
        effects, logits = channel_effects(G, layer, classifier, latents, ranges, progress=True)
        elapsed = time.perf_counter() - start
        classes = range(num_classes) if args.target is None else [args.target]
        for c in classes:
            found = attfind(effects, c, top_k=args.top_k)
            for rank, (channel, direction, mean, explained) in enumerate(
                zip(found.channels, found.directions, found.mean_effects, found.explained, strict=True)
            ):
                rows.append(
                    {
                        "class": c,
                        "rank": rank,
                        "channel": int(channel),
                        "direction": "up" if int(direction) == 0 else "down",
                        "mean_logit_change": float(mean),
                        "explained_images": int(explained),
                        "stable_images": int(found.stable.sum()),
                        "time_s": elapsed,
                    }
                )
            # One panel per attribute (the paper's figures): the 6 images whose class-c logit it moves most.
            for rank, (channel, direction) in enumerate(
                zip(found.channels.tolist(), found.directions.tolist(), strict=True)
            ):
                show = effects[:, channel, direction, c].argsort(descending=True)[:6]
                original, up, down = shifted_images(G, layer, latents[show], ranges, channel)
                panel = [("image", original), (f"ch {channel} up", up), (f"ch {channel} down", down)]
                captions = [f"Δ{c} {effects[i, channel, 0, c]:+.1f}/{effects[i, channel, 1, c]:+.1f}" for i in show]
                save_panel(panel, out / f"attfind_class{c}_rank{rank}.png", captions)
                if rank == 0:
                    grid = make_grid(to_unit_range(torch.cat([original, up, down])), nrow=len(show))
                    writer.add_image(f"attfind/class{c}_top", grid)
        print(f"AttFind: layer {args.layer!r}, {effects.shape[1]} channels, logits of {len(latents)} images")

    writer.close()
    write_rows(rows, out / "summary.csv")
    for row in rows:
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"-> {out}")
    return {"out": str(out), "rows": rows}


def _mass_on_top(maps: torch.Tensor, change: torch.Tensor, share: float) -> float:
    """Mean share of each map's mass on the ``share`` of pixels where ``change`` is largest."""
    flat, weight = maps.flatten(1), change.flatten(1)
    top = weight.topk(max(1, int(share * weight.shape[1])), dim=1).indices
    return (flat.gather(1, top).sum(dim=1) / flat.sum(dim=1).clamp_min(1e-12)).mean().item()


if __name__ == "__main__":
    run_main(main, user_errors=(FileNotFoundError,))
