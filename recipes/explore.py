"""E-GBAS on a trained GAN run: sample inside the generative boundaries around query latents.

    python recipes/explore.py runs/demo --num-queries 8
    python recipes/explore.py runs/demo_shapes --num-queries 8 --num-samples 32 --radius 3

For each query z0: the smallest supporting set of units of the first block (relaxed-Bernoulli masks, L1
cost), then a tree of samples inside the region its boundaries bound, and ε-ball samples at the same
distances from z0. Reports the acceptance rate (the sign pattern is kept) and the semantic consistency
(the project's classifier for the run's dataset labels the sample like the query) of both. Writes to
<out> (default <run>/explore): report.md, queries.csv, samples.png (per query: the query, tree samples;
below: ε-ball samples), tensorboard/, summary.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import json

import torch
from tqdm.auto import tqdm

from xai_train.cli import count, run_main
from xai_train.generator.egbas import explore, region_constraints, supporting_set
from xai_train.generator.report import class_agreement, markdown_table, rows_grid, write_csv, write_images
from xai_train.generator.run import parse_run_arguments, run_parser
from xai_train.generator.units import find_layer, generate, sample_latents
from xai_train.metrics import ClassifierRecipe, domain_feature_extractor


def main(argv: list[str] | None = None) -> dict:
    parser = run_parser(__doc__)
    parser.add_argument("--num-queries", type=count, default=8)
    parser.add_argument("--num-samples", type=count, default=32, help="accepted samples per query")
    parser.add_argument("--radius", type=float, default=3.0, help="longest ray searched (latent units)")
    parser.add_argument("--boundary-layer", default="project.norm", help="pre-activations (the boundaries)")
    parser.add_argument("--activation-layer", default="project.act", help="units masked for the supporting set")
    parser.add_argument("--l1", type=float, default=1e-3, help="cost per kept unit (pixel MSE units)")
    parser.add_argument("--steps", type=int, default=150, help="supporting-set optimisation steps")
    parser.add_argument("--feature-steps", type=int, default=ClassifierRecipe.max_steps,
                        help="training steps of the dataset's classifier if it is not cached yet")  # fmt: skip
    args, run = parse_run_arguments(parser, argv)  # also --checkpoint, --seed, --out, --threads
    G, data = run.generator, run.config.data
    find_layer(G, args.boundary_layer)
    find_layer(G, args.activation_layer)
    extractor = domain_feature_extractor(
        data.name, image_size=data.image_size, channels=data.channels, root=data.root or None,
        recipe=ClassifierRecipe(max_steps=args.feature_steps),
    )  # fmt: skip
    classifier, accuracy = extractor.classifier, extractor.metadata.get("accuracy")
    queries = sample_latents(args.num_queries, G.latent_dim, args.seed)

    rows, grid_rows = [], []
    for i, query in enumerate(tqdm(queries, desc="E-GBAS queries")):
        support = supporting_set(G, args.activation_layer, query, l1=args.l1, steps=args.steps, seed=args.seed + i)
        neurons, signs = region_constraints(G, args.boundary_layer, query, support)
        result = explore(G, args.boundary_layer, query, neurons, signs, num_samples=args.num_samples,
                         radius=args.radius, seed=args.seed + i)  # fmt: skip
        tree_images, _ = generate(G, result.tree)
        baseline_images, _ = generate(G, result.baseline)
        distance = (result.tree[1:] - query).norm(dim=1)
        rows.append({
            "query": i, "support": int(support.sum()), "units": int(support.numel()),
            "mean_distance": distance.mean().item(), "tree_acceptance": 1.0,
            "eps_acceptance": result.baseline_inside.float().mean().item(),
            "tree_consistency": class_agreement(classifier, tree_images[:1], tree_images[1:]),
            "eps_consistency": class_agreement(classifier, tree_images[:1], baseline_images),
        })  # fmt: skip
        grid_rows += [tree_images[:8], torch.cat([tree_images[:1], baseline_images[:7]])]

    out = args.out or args.run_dir / "explore"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "queries.csv")
    write_images(out, {"samples": rows_grid(grid_rows)}, tag="explore/")
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key != "query"}
    summary = {"run": str(args.run_dir), "num_queries": args.num_queries, "num_samples": args.num_samples,
               "radius": args.radius, "classifier_accuracy": accuracy, **mean}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    columns = ["query", "support", "units", "mean_distance", "tree_acceptance", "eps_acceptance",
               "tree_consistency", "eps_consistency"]  # fmt: skip
    report = [
        f"# E-GBAS on {args.run_dir}: {args.num_queries} queries, {args.num_samples} samples each",
        f"Boundaries: `{args.boundary_layer}`; supporting set over the units of `{args.activation_layer}` "
        f"(L1 {args.l1}). ε-ball samples at the tree samples' distances from the query. Consistency = share "
        "labelled like the query by the project's classifier for the dataset.",
        markdown_table([*rows, {"query": "mean", **mean}], columns),
        "Rows of `samples.png`, per query: the query then tree samples; the query then ε-ball samples.",
        "![samples](samples.png)",
    ]
    (out / "report.md").write_text("\n\n".join(report) + "\n")
    print(f"E-GBAS: tree consistency {mean['tree_consistency']:.2f}, ε-ball {mean['eps_consistency']:.2f}, "
          f"ε acceptance {mean['eps_acceptance']:.2f} -> {out}")  # fmt: skip
    return summary


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug: traceback)
