"""Explain a GAN's discriminator (or a classifier) with the CAM suite and score every explanation.

    python recipes/explain.py runs/demo --methods all
    python recipes/explain.py runs/demo_shapes --methods gradcam,gradcampp,layercam,scorecam,randomcam
    python recipes/explain.py runs/demo --checkpoint step_800 --num-images 16 --removal road
    python recipes/explain.py --classifier digits --methods all           # the project's digits classifier
    python recipes/explain.py --classifier parts_shapes                    # trained once on parts_shapes, cached
    python recipes/explain.py --classifier my_model.pt --data shapes       # a TorchScript classifier (or .safetensors)

A GAN run: D and G are rebuilt from <run>/config.yaml and loaded from a checkpoint (default: the latest); the
real images come from the run's dataset (with ground-truth masks for shapes), the fakes from G. A classifier:
``digits``/``shapes``/``parts_shapes`` (the project's FeatureClassifier, trained once and cached), a safetensors file
of a FeatureClassifier, or a TorchScript file; each image's predicted class is explained. A TorchScript model runs
as a compiled graph whose layers call no forward hooks: it gets saliency and input x gradient, not the CAMs.

Writes <out> (default <run>/explain/, or runs/explain_<classifier>/explain/): grid.png (rows: the images, then
one row per method; columns: real images, then fakes), metrics.md and metrics.csv (metric x method, on the real
images), timings.json, and TensorBoard scalars and the grid in <out>/tensorboard. For a classifier also
galore.png: GALORE's attributive, counterfactual ("A and not B") and deliberative maps of each image's top two
classes, and with ground-truth masks galore/metrics.md (their energy in the mask).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from xai_train import runs
from xai_train.checkpoint import CheckpointError
from xai_train.cli import count, run_main
from xai_train.config import ConfigError
from xai_train.data import build_dataset
from xai_train.explain.galore import galore_maps
from xai_train.explain.quality import energy_in_mask
from xai_train.explain.report import (
    bound_explainer,
    check_report_methods,
    forward_backward_seconds,
    layer_name,
    method_grid,
    save_labelled_grid,
    score_method,
    timed,
    write_table,
)
from xai_train.metrics.classifier import FeatureClassifier
from xai_train.metrics.extractor import domain_feature_extractor
from xai_train.threads import configure_threads

BUILT_IN_CLASSIFIERS = ("digits", "shapes", "parts_shapes")


def load_gan_run(run_dir: Path, checkpoint: str, num_images: int, seed: int) -> tuple[nn.Module, dict]:
    """D, real images (and masks) from the run's dataset, and fakes from G (EMA weights when the run kept them)."""
    run = runs.load_gan_run(run_dir, checkpoint)
    if run.discriminator is None:
        raise CheckpointError(f"'{run.folder}' holds no discriminator (model_1.safetensors); pass a GAN run folder")
    config = run.config
    dataset = build_dataset(**config.data.dataset_kwargs(config.run.seed)).sample(num_images, seed)
    with torch.no_grad():
        latents = torch.randn(num_images, config.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        fake = run.generator(latents)
    return run.discriminator, {"real": dataset.images, "fake": fake, "masks": dataset.masks, "name": run.folder.name}


def load_classifier(source: str, data_name: str | None, num_images: int, seed: int) -> tuple[nn.Module, dict]:
    """A built-in, TorchScript or safetensors classifier, and images of ``data_name`` to explain."""
    data_name = data_name or (source if source in BUILT_IN_CLASSIFIERS else "digits")
    dataset = build_dataset(data_name, image_size=32, channels=1, num_samples=2000, seed=seed).sample(num_images, seed)
    if source in BUILT_IN_CLASSIFIERS:
        model = domain_feature_extractor(source, image_size=32, channels=1).classifier
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--classifier {source!r}: not one of {BUILT_IN_CLASSIFIERS} and not a file")
        if path.suffix == ".safetensors":
            state = load_file(path) if path.stat().st_size else {}
            if "head.weight" not in state or "stages.0.0.weight" not in state:
                raise CheckpointError(f"'{path}' is not a FeatureClassifier state dict (no stages.0.0 / head weights)")
            width, channels = state["stages.0.0.weight"].shape[:2]
            classes, features = state["head.weight"].shape
            model = runs.load_weights(FeatureClassifier(channels, classes, width, features), path)
        else:
            try:
                model = torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as err:
                raise CheckpointError(f"cannot read '{path}' as a TorchScript model: {err}") from err
    batch = {"real": dataset.images, "fake": None, "masks": dataset.masks, "name": data_name}
    return model, batch | {"class_names": dataset.class_names}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, nargs="?", help="a GAN run directory, e.g. runs/demo")
    parser.add_argument("--classifier", help="digits | shapes | parts_shapes | a .pt (TorchScript) or .safetensors")
    parser.add_argument("--data", help="images for a classifier: digits | shapes | parts_shapes (default: its own)")
    parser.add_argument("--methods", default="all", help="'all' or comma-separated names, e.g. gradcam,layercam")
    parser.add_argument("--checkpoint", default="latest", help="'latest', 'best' or step_<N> (GAN runs)")
    parser.add_argument("--layer", help="module name of the CAM layer (default: D.feature_layer / last spatial conv)")
    parser.add_argument("--num-images", type=count, default=32, help="real images scored (and fakes shown)")
    parser.add_argument("--grid-images", type=count, help="real (and fake) columns in grid.png (default: up to 8)")
    parser.add_argument("--removal", default="blur", help="deletion/insertion removal: constant | blur | road")
    parser.add_argument(
        "--score", default="auto", help="deletion/insertion track: probability | logit | auto (D: logit)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/explain)")
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    if (args.run_dir is None) == (args.classifier is None):
        raise ConfigError("give a GAN run directory or --classifier (exactly one of them)")
    if args.run_dir is not None and not (args.run_dir / "config.yaml").is_file():
        raise ConfigError(f"'{args.run_dir}' is not a run directory (no config.yaml); e.g. runs/demo")
    args.grid_images = args.grid_images or min(8, args.num_images)
    if args.num_images < 2 or not 1 <= args.grid_images <= args.num_images:
        raise ConfigError(
            f"--num-images must be >= 2 and --grid-images in [1, --num-images], got {args.num_images}, "
            f"{args.grid_images}"
        )
    if args.removal not in ("constant", "blur", "road"):
        raise ConfigError(f"--removal {args.removal!r}: choose constant, blur or road")
    if args.score not in ("auto", "probability", "logit"):
        raise ConfigError(f"--score {args.score!r}: choose auto, probability or logit")

    # 1. The model and the images.
    if args.run_dir is not None:
        model, batch = load_gan_run(args.run_dir, args.checkpoint, args.num_images, args.seed)
        out = args.out or args.run_dir / "explain"
    else:
        model, batch = load_classifier(args.classifier, args.data, args.num_images, args.seed)
        out = args.out or Path("runs") / f"explain_{Path(args.classifier).stem}" / "explain"
    real = batch["real"]
    with torch.no_grad():
        single_logit = model(real[:2]).reshape(2, -1).shape[1] == 1
    try:
        hooks = not isinstance(model, torch.jit.ScriptModule)  # TorchScript layers call no forward hooks
        methods = check_report_methods(args.methods.split(","), single_logit, hooks=hooks)
        layer = layer_name(model, real, args.layer) if hooks else ""
    except ValueError as err:
        raise ConfigError(str(err)) from err
    # A trained D's sigmoid saturates (real images can sit at 0.05): its logit separates the curves better.
    score = args.score if args.score != "auto" else ("logit" if single_logit else "probability")
    unit = forward_backward_seconds(model, real)

    # 2. Explain and score, one method at a time.
    shown = (
        real[: args.grid_images]
        if batch["fake"] is None
        else torch.cat([real[: args.grid_images], batch["fake"][: args.grid_images]])
    )
    rows, grid_maps, timings = {}, {}, {}
    for method in tqdm(methods, desc="explain", unit="method"):
        explain = bound_explainer(method, layer)
        maps, seconds = timed(explain, model, real)
        grid_maps[method] = explain(model, shown)
        timings[method] = {"seconds": seconds, "x_fwd_bwd": seconds / unit}
        scores = score_method(
            model, real, maps, explain, masks=batch["masks"], removal=args.removal, score=score, seed=args.seed
        )
        rows[method] = {"ms": 1000 * seconds, "x_fwd_bwd": seconds / unit, **scores}

    # 3. Write the grid, the table, the timings and TensorBoard.
    out.mkdir(parents=True, exist_ok=True)
    grid = method_grid(shown, grid_maps)
    columns = ["real"] * min(args.grid_images, len(real)) + ["fake"] * (len(shown) - min(args.grid_images, len(real)))
    save_labelled_grid(grid, out / "grid.png", ["image", *methods], columns, real.shape[-1])
    source = str(args.run_dir or args.classifier)
    write_table(
        rows,
        out,
        f"{source} ({batch['name']}, {len(real)} real images, layer {layer}, removal {args.removal}, score {score})",
    )
    (out / "timings.json").write_text(json.dumps({"fwd_bwd_seconds": unit, "methods": timings}, indent=2))
    from torch.utils.tensorboard import SummaryWriter  # imported late: tensorboard is slow to import

    with SummaryWriter(log_dir=str(out / "tensorboard")) as writer:
        for method, row in rows.items():
            for metric, value in row.items():
                writer.add_scalar(f"explain/{metric}/{method}", value, 0)
        writer.add_image("explain/grid", grid, 0)

    # 4. A classifier: GALORE's maps for each image's top two classes A, B ("A and not B", "A or B?").
    if not single_logit and hooks:
        galore = galore_maps(model, real, layer=dict(model.named_modules())[layer])
        names = ["attributive", "counterfactual", "deliberative"]
        classes = batch.get("class_names") or ()
        label = lambda k: classes[k] if k < len(classes) else str(k)  # noqa: E731
        pairs = [f"{label(a)} not {label(b)}" for a, b in galore["classes"][: args.grid_images].tolist()]
        grid = method_grid(real[: args.grid_images], {n: galore[n][: args.grid_images] for n in names})
        save_labelled_grid(grid, out / "galore.png", ["image", *names], pairs, real.shape[-1])
        if batch["masks"] is not None:
            energy = {n: float(energy_in_mask(galore[n], batch["masks"]).mean()) for n in names}
            write_table({n: {"energy_in_mask": e} for n, e in energy.items()}, out / "galore", f"GALORE, {source}")
    print(f"{len(methods)} methods on {len(real)} images (layer {layer}) -> {out}")
    return out


if __name__ == "__main__":
    run_main(main, user_errors=(FileNotFoundError,))  # one "error: ..." line, exit code 2 (--debug: traceback)
