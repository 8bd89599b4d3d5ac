"""Run an ablation: every arm x seed of a configs/ablation/*.yaml as its own recipe run, then aggregate.

    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --dry-run        # cells and exact commands
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml                  # run (resumable), aggregate
    python recipes/ablate.py configs/ablation/xaigan_alpha.yaml --seeds 0 1 2 3 4 --only arm=vanilla
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --set train.max_steps=5000 \\
        --output-dir runs/ablation/xaigan_explainers_full
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --launcher "torchrun --nproc_per_node 2"
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --report-only    # re-aggregate only
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --report-only \
        --publish docs/results/xaigan_explainers.md                                   # + into a results page
    python recipes/ablate.py configs/ablation/xaigan_explainers.yaml --jobs 2         # two 1-thread cells at once
    python recipes/ablate.py configs/ablation/xaigan_alpha.yaml --backend slurm --partition gpu --gpus-per-cell 1 \\
        --time-min 240 --max-parallel 16 --no-wait                                # submit a job array, return
    python recipes/ablate.py configs/ablation/xaigan_alpha.yaml --backend slurm ... # same command: re-attach, report
    python recipes/ablate.py configs/ablation/xaigan_alpha.yaml --backend ray --ray-address auto --cpus-per-cell 1

Cells run as `python <recipe> --config <base> <overrides> run.name=seed_<s> run.output_dir=<ablation_dir>/<arm>
run.seed=<s> run.resume=auto` (or behind --launcher), each with the YAML's `threads` torch threads (default 1;
--threads overrides): a CPU result depends on the thread count, so all cells share one. --backend picks where:
local (subprocesses, --jobs at a time), slurm (one submitit job array; USR2 pre-empts and requeues) or ray (one
task per cell); docs/sweeps.md has the details. Re-running the same command skips finished cells (summary.json
with steps == max_steps) and resumes unfinished ones. A failing cell is reported with its log
(<cell_dir>/log.txt) in the output, results.md ("k of N finished", "Not finished") and failures.json; the others
still run; the exit code is then 1.

The report refuses to aggregate cells whose environment fingerprints (summary.json: versions, device, CPU,
threads, extractor, ...) differ in anything that changes numbers; --allow-mixed aggregates them anyway and
the report says so.

Outputs in <ablation_dir> (default runs/ablation/<name>): <arm>/seed_<s>/ (the runs), results.csv,
results.md (rewritten after each finished cell), failures.json, <metric>_curves.png (metric vs step and vs
wall-clock, mean ± std band), hparams/ (TensorBoard); slurm/ (submitit's files and jobs.json) on Slurm.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from xai_train.ablation.backends import BACKENDS, Update, make_backend
from xai_train.ablation.page import publish
from xai_train.ablation.progress import CellProgress, folder_states, status_lines, status_table, write_failures
from xai_train.ablation.report import write_report
from xai_train.ablation.runner import cell_dir, run_cells
from xai_train.ablation.spec import AblationSpec, expand_cells, load_spec, parse_threads, validate_cells
from xai_train.atomic import atomic_write
from xai_train.cli import count, run_main
from xai_train.config import ConfigError, parse_override
from xai_train.errors import UserError


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
    parser.add_argument(
        "--publish",
        metavar="PAGE",
        default="",
        help="after the report, put it into PAGE between its report markers, CSVs/plots beside it (page.publish)",
    )
    parser.add_argument("--jobs", type=count, default=1, help="cells run at the same time (default 1)")
    parser.add_argument("--threads", help="torch threads per cell: N or auto (default: the YAML's threads, else 1)")
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="aggregate cells whose environment fingerprints differ (the report says so)",
    )
    engine = parser.add_argument_group("backends (docs/sweeps.md)")
    engine.add_argument("--backend", choices=BACKENDS, default="local", help="where cells run (default local)")
    engine.add_argument("--cpus-per-cell", type=count, help="CPUs reserved per cell (default: the threads, else 1)")
    engine.add_argument("--gpus-per-cell", type=int, default=0, help="GPUs reserved per cell (default 0)")
    engine.add_argument("--max-parallel", type=count, help="cells at a time on slurm/ray (default: the engine's)")
    engine.add_argument("--no-wait", action="store_true", help="slurm: submit and return; rerun to re-attach")
    engine.add_argument("--partition", default="", help="slurm partition (default: the cluster's)")
    engine.add_argument("--time-min", type=count, default=60, help="slurm time limit per cell, minutes (default 60)")
    engine.add_argument("--constraint", default="", help="slurm --constraint, e.g. a GPU type")
    engine.add_argument("--slurm-folder", default="", help="submitit's folder (default <ablation_dir>/slurm)")
    engine.add_argument("--ray-address", default="", help="ray.init address, e.g. auto (default: RAY_ADDRESS)")
    args = parser.parse_args(argv)
    if args.publish and not Path(args.publish).parent.is_dir():
        raise UserError(f"--publish {args.publish}: folder {Path(args.publish).parent} does not exist; create it first")

    spec = with_extra_overrides(load_spec(args.ablation), args.set)
    if args.threads is not None:
        spec = dataclasses.replace(spec, threads=parse_threads(args.threads, "--threads"))
    only_arms, only_seeds = parse_only(args.only)
    cells = expand_cells(spec, seeds=args.seeds, only_arms=only_arms)
    if only_seeds is not None:
        cells = [cell for cell in cells if cell.seed in only_seeds]
    validate_cells(spec, cells)
    ablation_dir = Path(args.output_dir or spec.output_dir or Path("runs") / "ablation" / spec.name)
    at_a_time = args.max_parallel or (args.jobs if args.backend == "local" else "the engine's limit")
    per_arm = sorted({sum(c.arm == arm for c in cells) for arm in {c.arm for c in cells}}) or [0]
    seeds = f" x {per_arm[0]} seeds" if len(per_arm) == 1 else f", {per_arm[0]}-{per_arm[-1]} seeds each"
    print(
        f"ablation '{spec.name}': {len(cells)} cells ({len({c.arm for c in cells})} arms{seeds}), "
        f"recipe {spec.recipe}, base {spec.base}, directory {ablation_dir}, "
        f"{spec.threads or 'auto'} thread(s) per cell, {at_a_time} at a time, backend {args.backend}"
    )
    backend = make_backend(
        args.backend,
        jobs=args.jobs,
        cpus_per_cell=args.cpus_per_cell or spec.threads or 1,
        gpus_per_cell=args.gpus_per_cell,
        max_parallel=args.max_parallel or 0,
        wait=not args.no_wait,
        slurm_folder=args.slurm_folder or str(ablation_dir / "slurm"),
        partition=args.partition,
        time_min=args.time_min,
        constraint=args.constraint,
        ray_address=args.ray_address,
    )
    directories = {cell.key: str(Path.cwd() / cell_dir(ablation_dir, cell)) for cell in cells}
    progress = {key: CellProgress(key, state, directories[key]) for key, state in folder_states(directories).items()}
    if args.report_only:
        return report(spec, ablation_dir, progress, args.allow_mixed, args.publish)

    def on_update(cells_now: dict[str, CellProgress], update: Update) -> None:
        progress.update(cells_now)
        print(status_table(list(progress.values())), flush=True)
        if update.state == "finished":  # results.md follows the sweep; the final one below is the contract
            try:
                lines = status_lines(list(progress.values()))
                write_report(spec, ablation_dir, allow_mixed=args.allow_mixed, status=lines)
            except UserError as err:
                print(f"warning: results.md not rewritten yet: {err}", file=sys.stderr)

    if not args.dry_run:
        ablation_dir.mkdir(parents=True, exist_ok=True)
        # run_main passes sys.argv[1:] as argv: name the recipe too, so the line can be pasted back
        command = shlex.join(["python", "recipes/ablate.py", *(sys.argv[1:] if argv is None else argv)])
        atomic_write(ablation_dir / "ablate_command.txt", command + "\n")
    outcomes = run_cells(
        spec,
        cells,
        ablation_dir,
        backend=backend,
        launcher=args.launcher,
        dry_run=args.dry_run,
        jobs=args.jobs,
        on_update=on_update,
    )
    if args.dry_run:
        return 0
    submitted = [outcome for outcome in outcomes if outcome.status == "submitted"]
    if submitted:
        print(
            f"{len(submitted)} cell(s) submitted to {args.backend} (job ids in {backend.jobs_file()}); run the same "
            "command again to re-attach, follow them and report"
        )
    return report(spec, ablation_dir, progress, args.allow_mixed, args.publish)


def report(
    spec: AblationSpec, ablation_dir: Path, progress: dict[str, CellProgress], allow_mixed: bool, page: str = ""
) -> int:
    """Writes results.* with the "k of N finished" lines and failures.json (and into ``page``, if given);
    1 if a cell failed or was lost."""
    cells = list(progress.values())
    failures = write_failures(ablation_dir / "failures.json", cells)
    paths = write_report(spec, ablation_dir, allow_mixed=allow_mixed, status=status_lines(cells))
    print("results: " + ", ".join(str(path) for path in [*paths, failures]))
    if page:
        print("published: " + ", ".join(str(path) for path in publish(ablation_dir, page)))
    failed = [cell for cell in cells if cell.state in ("failed", "lost")]
    if failed:
        print(
            f"{len(failed)} cell(s) not finished:\n"
            + "\n".join(f"  {cell.key}: {cell.state}, log {cell.directory}/log.txt" for cell in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
