"""GAN Dissection of a trained GAN run: which units of a generator layer draw which concepts, and causally.

    python recipes/dissect.py runs/demo_shapes --layer upsample.0.act
    python recipes/dissect.py runs/demo --layer upsample.1.act --threshold iqr --num-samples 2000
    python recipes/dissect.py runs/demo --layer nope          # lists the layers with channel maps

Concepts come from a small segmenter the project trains once on the run's dataset (cached): on shapes
{circle, square, triangle} from the shape masks, on digits the ink of each digit class. Writes to
<out> (default <run>/dissect/<layer>): report.md, ranking.csv (every unit: best concept, IoU,
threshold, ablation/insertion effects), units.png (each top unit's most activating samples with its
map), edits.png (per concept: samples, its top units ablated, inserted), tensorboard/, summary.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import json
import time

import torch

from xai_train.cli import count, run_main
from xai_train.generator.dissection import THRESHOLD_MODES, add_unit_effects, causal_effects, dissect
from xai_train.generator.report import markdown_table, rows_grid, unit_grid, write_images
from xai_train.generator.run import parse_run_arguments, run_parser
from xai_train.generator.segmenter import SegmenterRecipe, load_or_train_segmenter
from xai_train.generator.units import UnitEdit, find_layer, generate, sample_latents


def main(argv: list[str] | None = None) -> dict:
    parser = run_parser(__doc__)
    parser.add_argument("--layer", default="upsample.0.act", help="generator layer whose channels are the units")
    parser.add_argument("--num-samples", type=count, default=2000, help="generated samples for the IoU")
    parser.add_argument("--threshold", choices=THRESHOLD_MODES, default="quantile", help="unit threshold rule")
    parser.add_argument("--level", type=float, default=0.99, help="top-quantile level (the paper: 0.99-0.995)")
    parser.add_argument("--causal-samples", type=count, default=200, help="samples per causal-effect estimate")
    parser.add_argument("--causal-units", type=count, default=16, help="top units whose effects are measured")
    parser.add_argument("--set-size", type=count, default=4, help="units per concept ablated/inserted together")
    parser.add_argument("--segmenter-steps", type=int, default=SegmenterRecipe.steps, help="if trained (cached)")
    parser.add_argument("--batch-size", type=count, default=256)
    args, run = parse_run_arguments(parser, argv)  # also --checkpoint, --seed, --out, --threads
    G, data = run.generator, run.config.data
    find_layer(G, args.layer)  # a clear error before any work
    recipe = SegmenterRecipe(steps=args.segmenter_steps)
    segmenter = load_or_train_segmenter(data.name, image_size=data.image_size, channels=data.channels, recipe=recipe)
    started, cpu_started = time.perf_counter(), time.process_time()  # from here: the segmenter is cached
    segment = segmenter.masks
    latents = sample_latents(args.num_samples, G.latent_dim, args.seed)

    # 1. thresholds and unit-concept IoU over all samples
    result, images, units = dissect(
        G, args.layer, latents, segment, segmenter.concepts, threshold=args.threshold, level=args.level,
        batch_size=args.batch_size, progress=True,
    )  # fmt: skip
    dissected, cpu_dissected = time.perf_counter(), time.process_time()

    # 2. causal effects: the top units one by one, and each concept's top units together
    causal = latents[: args.causal_samples]
    top_units = [row["unit"] for row in result.ranking()[: args.causal_units]]
    add_unit_effects(result, G, causal, segment, units=top_units, batch_size=args.batch_size, progress=True)
    concepts = [c for c in segmenter.concepts if c != "background"]
    sets = [result.units_for(c, args.set_size) for c in concepts]
    set_effects = causal_effects(
        G, args.layer, causal, segment, sets, result.insert_values, batch_size=args.batch_size, progress=True
    )
    elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started

    # 3. report: table, grids, TensorBoard
    out = args.out or args.run_dir / "dissect" / args.layer
    out.mkdir(parents=True, exist_ok=True)
    result.write_csv(out / "ranking.csv")
    show = causal[:8]
    num_units = result.iou.shape[0]
    edit_rows = [generate(G, show)[0]]
    for units_set in sets:
        chosen = torch.zeros(num_units, dtype=torch.bool).index_fill(0, torch.tensor(units_set), True)
        edit_rows.append(generate(G, show, args.layer, UnitEdit((~chosen).float()))[0])
        inserted = UnitEdit(torch.ones(num_units), result.insert_values, chosen)
        edit_rows.append(generate(G, show, args.layer, inserted)[0])
    grids = {"units": unit_grid(images, units, top_units[:8]), "edits": rows_grid(edit_rows)}
    write_images(out, grids, tag="dissect/")
    set_rows = []
    for i, (concept, units_set) in enumerate(zip(concepts, sets, strict=True)):
        c = segmenter.concepts.index(concept)
        effects = {name: set_effects[name][i, c].item() for name in ("ablate", "insert", "ace")}
        set_rows.append({"concept": concept, "units": " ".join(map(str, units_set)),
                         "share": set_effects["share"][c].item(), **effects})  # fmt: skip
    counted = sum(row["counts"] for row in result.ranking())
    summary = {
        "run": str(args.run_dir), "checkpoint": str(run.folder), "layer": args.layer, "threshold": args.threshold,
        "num_samples": args.num_samples, "units": int(result.iou.shape[0]), "units_over_0.05": counted,
        "segmenter_accuracy": getattr(segmenter, "accuracy", None), "seconds_dissection": dissected - started,
        "seconds_total": elapsed, "cpu_seconds_dissection": cpu_dissected - cpu_started,
        "cpu_seconds_total": cpu_elapsed, "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = [
        f"# GAN Dissection of {args.run_dir}, layer `{args.layer}`",
        f"{args.num_samples} samples, threshold `{args.threshold}`, {counted} of {result.iou.shape[0]} units have "
        f"IoU > 0.05 with a concept; segmenter pixel accuracy {summary['segmenter_accuracy']:.3f} on real images. "
        f"Dissection {summary['seconds_dissection']:.1f} s, with causal effects {elapsed:.1f} s "
        f"(CPU time {summary['cpu_seconds_dissection']:.1f} s and {cpu_elapsed:.1f} s).",
        "## Units ranked by IoU (effects for the top units, on their concept)",
        result.markdown(top=args.causal_units),
        f"## Each concept's top {args.set_size} units together",
        markdown_table(set_rows, ["concept", "units", "share", "ablate", "insert", "ace"]),
        "ablate = 1 − share(ablated)/share, insert = share(inserted)/share − 1, ace = (inserted − ablated)/share.",
        "![units](units.png)\n\nRows of `edits.png`: samples, then per concept its units ablated, inserted.",
        "![edits](edits.png)",
    ]
    (out / "report.md").write_text("\n\n".join(report) + "\n")
    print(f"dissected {args.layer}: {counted} units over IoU 0.05, {elapsed:.1f} s -> {out}")
    return summary


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug: traceback)
