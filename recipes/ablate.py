"""Run an ablation: every arm x seed of a configs/ablation/*.yaml as its own recipe run, then aggregate.

    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --dry-run        # cells and exact commands
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml                  # run (resumable), aggregate
    python recipes/ablate.py configs/ablation/xaigan_alpha.yaml --seeds 0 1 2 3 4 --only arm=vanilla
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --set train.max_steps=5000 \\
        --output-dir runs/ablation/xaigan_explainers_full
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --launcher "torchrun --nproc_per_node 2"
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --report-only    # re-aggregate only
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --jobs 2         # two 1-thread cells at once

Cells run as subprocesses (`python <recipe> --config <base> <overrides> run.name=seed_<s>
run.output_dir=<ablation_dir>/<arm> run.seed=<s>`, or behind --launcher), --jobs at a time, each with the
YAML's `threads` torch threads (default 1; --threads overrides): a CPU result depends on the thread count, so
all cells share one. Re-running the same command skips finished cells (summary.json with steps == max_steps)
and resumes unfinished ones with run.resume=auto. A failing cell is reported with its log
(<cell_dir>/log.txt); the others still run; the exit code is then 1.

The report refuses to aggregate cells whose environment fingerprints (summary.json: versions, device, CPU,
threads, extractor, ...) differ in anything that changes numbers; --allow-mixed aggregates them anyway and
the report says so.

Outputs in <ablation_dir> (default runs/ablation/<name>): <arm>/seed_<s>/ (the runs), results.csv,
results.md, <metric>_curves.png (metric vs step and vs wall-clock, mean ± std band), hparams/ (TensorBoard).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from xai_train.ablation.report import write_report
from xai_train.ablation.runner import run_cells
from xai_train.ablation.spec import AblationSpec, expand_cells, load_spec, parse_threads, validate_cells
from xai_train.atomic import atomic_write
from xai_train.cli import count, run_main
from xai_train.config import ConfigError, parse_override


def parse_only(values: list[str]) -> tuple[list[str] | None, list[int] | None]:
    """``["arm=a,b", "seed=0"]`` -> (arms, seeds); None where not restricted."""
    arms: list[str] | None = None
    seeds: list[int] | None = None
    for text in values:
        key, _, raw = text.partition("=")
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if key == "arm" and items:
            arms = (arms or []) + items
        elif key == "seed" and items and all(item.lstrip("-").isdigit() for item in items):
            seeds = (seeds or []) + [int(item) for item in items]
        else:
            raise ConfigError(f"--only '{text}': expected arm=NAME[,NAME...] or seed=N[,N...]")
    return arms, seeds


def with_extra_overrides(spec: AblationSpec, settings: list[str]) -> AblationSpec:
    """``--set key=value`` entries added to the common overrides (the arms' own overrides still win)."""
    extra = dict(parse_override(text) for text in settings)
    if any(key.startswith("run.") for key in extra):
        raise ConfigError("--set run.* is not allowed: the runner sets run.name/output_dir/seed per cell")
    return dataclasses.replace(spec, overrides={**spec.overrides, **extra})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ablation", help="ablation YAML, e.g. configs/ablation/xaigan_explainers.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the cells and their exact commands")
    parser.add_argument("--launcher", default="", help='e.g. "accelerate launch --num_processes 2" (default: python)')
    parser.add_argument("--output-dir", default="", help="ablation directory (default: output_dir of the YAML)")
    parser.add_argument("--only", action="append", default=[], help="arm=NAME[,NAME] or seed=N[,N]; repeatable")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the YAML's seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra common override")
    parser.add_argument("--report-only", action="store_true", help="skip running; aggregate what is there")
    parser.add_argument("--jobs", type=count, default=1, help="cells run at the same time (default 1)")
    parser.add_argument("--threads", help="torch threads per cell: N or auto (default: the YAML's threads, else 1)")
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="aggregate cells whose environment fingerprints differ (the report says so)",
    )
    args = parser.parse_args(argv)

    spec = with_extra_overrides(load_spec(args.ablation), args.set)
    if args.threads is not None:
        spec = dataclasses.replace(spec, threads=parse_threads(args.threads, "--threads"))
    only_arms, only_seeds = parse_only(args.only)
    cells = expand_cells(spec, seeds=args.seeds, only_arms=only_arms)
    if only_seeds is not None:
        cells = [cell for cell in cells if cell.seed in only_seeds]
    validate_cells(spec, cells)
    ablation_dir = Path(args.output_dir or spec.output_dir or Path("runs") / "ablation" / spec.name)
    print(
        f"ablation '{spec.name}': {len(cells)} cells ({len({c.arm for c in cells})} arms x "
        f"{len({c.seed for c in cells})} seeds), recipe {spec.recipe}, base {spec.base}, directory {ablation_dir}, "
        f"{spec.threads or 'auto'} thread(s) per cell, {args.jobs} at a time"
    )

    failed = []
    if not args.report_only:
        outcomes = run_cells(spec, cells, ablation_dir, launcher=args.launcher, dry_run=args.dry_run, jobs=args.jobs)
        if args.dry_run:
            return 0
        failed = [outcome for outcome in outcomes if outcome.status == "failed"]
        ablation_dir.mkdir(parents=True, exist_ok=True)
        # run_main passes sys.argv[1:] as argv: name the recipe too, so the line can be pasted back
        command = shlex.join(["python", "recipes/ablate.py", *(sys.argv[1:] if argv is None else argv)])
        atomic_write(ablation_dir / "ablate_command.txt", command + "\n")

    paths = write_report(spec, ablation_dir, allow_mixed=args.allow_mixed)
    print("results: " + ", ".join(str(path) for path in paths))
    if failed:
        print(
            f"{len(failed)} cell(s) failed:\n"
            + "\n".join(f"  {o.cell.key}: exit {o.returncode}, log {o.log}" for o in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
