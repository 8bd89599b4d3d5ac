"""Find and suppress artifact-causing generator units of a GAN run, against a random-unit control.

    python recipes/correct_units.py runs/demo --scorer rare --layers project.act
    python recipes/correct_units.py runs/demo --scorer d --layers upsample.0.act
    python recipes/correct_units.py runs/demo --scorer d --layers project.act upsample.0.act   # sequential
    python recipes/correct_units.py runs/demo --dump-samples labels/ --num-dump 400   # PNGs to sort by hand
    python recipes/correct_units.py runs/demo --scorer classifier --train-scorer labels/ --scorer-checkpoint scorer
    python recipes/correct_units.py runs/demo --scorer classifier --scorer-checkpoint scorer

Scorers: ``d`` = −D(x) with Grad-CAM pseudo masks (a weak baseline: D's fake evidence is not an
artifact detector), ``classifier`` = a small flawed/normal classifier trained on a folder with
``flawed/`` and ``normal/`` subfolders of generations (``--train-scorer``), ``rare`` = label-free
rarely-activated units (Choi et al.). One layer = global correction; several = sequential, re-scored
after each layer. Writes to <out> (default <run>/correct/<scorer>): report.md, sweep.csv (k-sweep: top-k
vs random-k per seed: FD/KID of all and of the flagged samples, change of the unflagged ones),
before_after.png (flagged samples before / after / random control), tensorboard/, and generator/ (the
corrected G baked into its weights: model.safetensors + config.yaml, loadable like a run, and
generator.pt2, which ``torch.export.load(path).module()`` runs without this project).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import json
from pathlib import Path

from xai_train.atomic import atomic_write
from xai_train.cli import count, run_main
from xai_train.data import build_dataset, load_image_folder
from xai_train.errors import UserError
from xai_train.explain import METHODS
from xai_train.fingerprint import environment_fingerprint
from xai_train.generator.bake import bake_target, bake_unit_scale, export_generator
from xai_train.generator.correct import (
    check_k,
    k_sweep,
    random_units,
    sequential_correction,
    summarise_sweep,
    suppression_scale,
)
from xai_train.generator.report import markdown_table, rows_grid, write_csv, write_images
from xai_train.generator.run import parse_run_arguments, run_parser, save_generator_folder
from xai_train.generator.scorers import (
    SCORERS,
    NegatedDiscriminator,
    RareUnitScorer,
    cam_scorer,
    load_artifact_classifier,
    save_artifact_classifier,
    train_artifact_classifier,
)
from xai_train.generator.units import channel_layers, generate, sample_latents
from xai_train.images import save_png, to_unit_range
from xai_train.metrics import ClassifierRecipe, domain_feature_extractor, extract_features


def build_scorer(args: argparse.Namespace, run, data):
    """The scorer the arguments ask for (training the classifier first with --train-scorer)."""
    if args.scorer == "rare":
        return RareUnitScorer(max_frequency=args.rare_frequency)
    if args.scorer == "d":
        if run.discriminator is None:
            raise UserError(f"'{args.run_dir}' holds no discriminator; --scorer d needs a training checkpoint")
        return cam_scorer(NegatedDiscriminator(run.discriminator), method=args.cam, cam_threshold=args.cam_threshold)
    if not args.scorer_checkpoint:
        raise UserError("--scorer classifier needs --scorer-checkpoint PATH (train one with --train-scorer FOLDER)")
    if args.train_scorer:
        folder = load_image_folder(args.train_scorer, image_size=data.image_size, channels=data.channels,
                                   class_folders=True)  # fmt: skip
        if set(folder.class_names) != {"flawed", "normal"}:
            raise UserError(f"{args.train_scorer} must hold exactly flawed/ and normal/, got {folder.class_names}")
        flawed = folder.labels == folder.class_names.index("flawed")
        model, accuracy = train_artifact_classifier(folder.images, flawed, seed=args.seed)
        save_artifact_classifier(model, args.scorer_checkpoint, accuracy=accuracy, images=len(flawed))
        print(f"artifact classifier: held-out accuracy {accuracy:.3f} -> {args.scorer_checkpoint}")
    model = load_artifact_classifier(args.scorer_checkpoint)
    return cam_scorer(model, method=args.cam, cam_threshold=args.cam_threshold)


def main(argv: list[str] | None = None) -> dict:
    parser = run_parser(__doc__)
    parser.add_argument("--scorer", choices=SCORERS, default="rare")
    parser.add_argument("--layers", nargs="+", default=["upsample.0.act"], help="one (global) or several (sequential)")
    parser.add_argument("--k", type=count, default=4, help="units suppressed per layer in the corrected generator")
    parser.add_argument("--strength", type=float, default=1.0, help="s in r <- (1 - s) r; 1 ablates")
    parser.add_argument("--ks", type=count, nargs="+", default=[1, 2, 4, 8, 16], help="the k-sweep")
    parser.add_argument("--random-seeds", type=int, default=3, help="random-unit controls per k")
    parser.add_argument("--flag-fraction", type=float, default=0.2, help="share of samples flagged as flawed")
    parser.add_argument("--num-samples", type=count, default=2000)
    parser.add_argument("--cam", default="gradcam", help=f"pseudo-mask explainer, one of: {', '.join(METHODS)}")
    parser.add_argument("--cam-threshold", type=float, default=0.3, help="pseudo mask: normalised CAM above this")
    parser.add_argument("--rare-frequency", type=float, default=0.3, help="rare units fire on at most this share")
    parser.add_argument("--scorer-checkpoint", default="", help="artifact classifier (<path>.safetensors/.json)")
    parser.add_argument("--train-scorer", default="", help="folder with flawed/ and normal/ generations")
    parser.add_argument("--dump-samples", type=Path, default=None, help="write generations as PNGs and stop")
    parser.add_argument("--num-dump", type=int, default=200)
    parser.add_argument("--feature-steps", type=int, default=ClassifierRecipe.max_steps,
                        help="training steps of the dataset's classifier if it is not cached yet")  # fmt: skip
    args, run = parse_run_arguments(parser, argv)  # also --checkpoint, --seed, --out, --threads
    G, data = run.generator, run.config.data
    for layer in args.layers:
        bake_target(G, layer)  # checks the name, and that the correction can be baked into the weights
    units = channel_layers(G)
    for layer in args.layers:  # before any scoring: --k 100 on a 16-unit layer would ablate all of it
        check_k(args.k, units[layer][0], layer)
    for k in args.ks:
        check_k(k, units[args.layers[-1]][0], args.layers[-1])
    if args.dump_samples:  # generations to label by hand: move each into flawed/ or normal/
        images, _ = generate(G, sample_latents(args.num_dump, G.latent_dim, args.seed + 1))
        for i, image in enumerate(images):
            save_png(to_unit_range(image), args.dump_samples / f"sample_{i:05d}.png")  # exact size, no padding
        print(f"{len(images)} samples -> {args.dump_samples}; sort them into flawed/ and normal/")
        return {}
    scorer = build_scorer(args, run, data)
    latents = sample_latents(args.num_samples, G.latent_dim, args.seed)

    # 1. rank units (layer by layer, re-scored under the earlier layers' corrections) and correct
    corrections, rankings = sequential_correction(
        G, args.layers, latents, scorer, k=args.k, strength=args.strength, flag_fraction=args.flag_fraction
    )

    # 2. k-sweep with the random control on the last layer (earlier layers keep their correction)
    real = build_dataset(**data.dataset_kwargs(run.config.run.seed)).images
    extractor = domain_feature_extractor(
        data.name, image_size=data.image_size, channels=data.channels, root=data.root or None,
        recipe=ClassifierRecipe(max_steps=args.feature_steps),
    )  # fmt: skip
    real_features = extract_features(extractor, real)
    last = rankings[-1]
    sweep = k_sweep(
        G, last, latents, real_features, lambda x: extract_features(extractor, x), ks=args.ks, strength=args.strength,
        random_seeds=range(args.random_seeds), corrections=corrections, progress=True,
    )  # fmt: skip
    summary_rows = summarise_sweep(sweep)

    # 3. bake the correction into the weights; check it equals the hooks; save and export
    baked = G
    for layer, scale in corrections.items():
        baked = bake_unit_scale(baked, layer, scale)
    check = latents[:64]
    hooked_images, _ = generate(G, check, edits=corrections)
    difference = (generate(baked, check)[0] - hooked_images).abs().max().item()
    out = args.out or args.run_dir / "correct" / args.scorer
    folder = save_generator_folder(baked, args.run_dir, out / "generator")
    export_generator(baked, folder / "generator.pt2")

    # 4. pictures and report
    flagged = last.flagged.nonzero().flatten()[:8]
    random_scale = suppression_scale(len(last.scores), random_units(len(last.scores), args.k, 0), args.strength)
    rows = [
        generate(G, latents[flagged])[0],
        generate(G, latents[flagged], edits=corrections)[0],
        generate(G, latents[flagged], edits={**corrections, last.layer: random_scale})[0],
    ]
    write_images(out, {"before_after": rows_grid(rows)}, tag="correct/")
    write_csv([{**row, "units": " ".join(map(str, row["units"]))} for row in sweep], out / "sweep.csv")
    metric_columns = ["k", "arm", "seeds", "fd_all", "kid_all", "fd_flagged", "kid_flagged", "unflagged_change"]
    summary = {
        "run": str(args.run_dir), "scorer": args.scorer, "layers": args.layers, "k": args.k,
        "strength": args.strength, "extractor": extractor.name, "flagged": int(last.flagged.sum()),
        "units": {r.layer: r.order[: args.k] for r in rankings}, "baked_minus_hooked": difference,
        "num_samples": args.num_samples,
        "fingerprint": environment_fingerprint(seed=args.seed, extractor=extractor.name),
    }  # fmt: skip
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    report = [
        f"# Artifact-unit correction of {args.run_dir}: scorer `{args.scorer}`, layers {', '.join(args.layers)}",
        f"{args.num_samples} samples, {summary['flagged']} flagged ({args.flag_fraction:.0%}); suppressed units "
        f"(top {args.k}, strength {args.strength}): {summary['units']}. FD/KID on `{extractor.name}` features "
        f"against {len(real)} real images; the flagged subset's FD is biased upward (few samples): read KID.",
        f"## k-sweep on `{last.layer}`: top-k units vs {args.random_seeds} random-k controls (mean over seeds)",
        markdown_table(summary_rows, metric_columns),
        f"Baked weights vs hooks: max |difference| {difference:.2e}. Corrected generator: `{folder}`.",
        "Rows of `before_after.png`: flagged samples, corrected, random-unit control.",
        "![before/after](before_after.png)",
    ]
    atomic_write(out / "report.md", "\n\n".join(report) + "\n")
    print(f"corrected {args.layers} with scorer {args.scorer}: units {summary['units']} -> {out}")
    return summary


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug: traceback)
