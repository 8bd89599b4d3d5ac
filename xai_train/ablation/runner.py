"""Running ablation cells on a backend (this machine, Slurm, Ray): resumable, a progress line per cell.

A cell lives in ``<ablation_dir>/<arm>/seed_<seed>/`` (``run.output_dir=<ablation_dir>/<arm>``,
``run.name=seed_<seed>``). Its state is read from the files the recipe leaves there:

- ``finished``: ``summary.json`` exists and says ``steps == max_steps``: skipped;
- ``partial``: the folder exists but the run did not finish (killed, failed, pre-empted): run again;
- ``new``: nothing there yet.

Every attempt runs with ``run.resume=auto``, which continues from the latest checkpoint (or starts fresh if none
was saved). What an attempt leaves in the cell folder (``log.txt``, ``command.txt``, ``attempts.jsonl``, the
``lease``) is described in :mod:`xai_train.ablation.cellrun`; backends live in :mod:`xai_train.ablation.backends`.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xai_train.ablation.backends import Update
from xai_train.ablation.backends.local import LocalBackend
from xai_train.ablation.cellrun import FINISHED, PARTIAL, CellRequest, cell_status
from xai_train.ablation.progress import CellProgress, format_seconds
from xai_train.ablation.spec import AblationSpec, Cell, format_value
from xai_train.errors import UserError
from xai_train.threads import THREADS_ENV

if TYPE_CHECKING:
    from xai_train.ablation.backends.ray import RayBackend
    from xai_train.ablation.backends.slurm import SlurmBackend

    Backend = LocalBackend | SlurmBackend | RayBackend

CHANGED_WARNING = "WARNING: it ran with other settings, see its command.txt; a changed ablation needs --output-dir"


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell in this invocation."""

    cell: Cell
    status: str  # "skipped" | "planned" | "ok" | "failed" | "submitted" (left running by --no-wait)
    seconds: float = 0.0
    returncode: int = 0
    log: Path | None = None
    state: str = ""  # the backend's last word: finished | failed | lost | queued | running | requeued
    job_id: str = ""


def cell_dir(ablation_dir: str | Path, cell: Cell) -> Path:
    """``<ablation_dir>/<arm>/seed_<seed>``, the run directory of ``cell``."""
    return Path(ablation_dir) / cell.arm / f"seed_{cell.seed}"


def cell_args(spec: AblationSpec, cell: Cell, ablation_dir: str | Path) -> list[str]:
    """The recipe part of a cell's command: ``recipe --config base <overrides> run.name run.output_dir run.seed``.

    Example:
        >>> from xai_train.ablation.spec import Arm
        >>> spec = AblationSpec("demo", "recipes/train_gan.py", "base.yaml", (Arm("a", {}, True),))
        >>> cell_args(spec, Cell("a", 1, {"xai.alpha": 0.5}), "runs/demo")[2:]
        ['base.yaml', 'xai.alpha=0.5', 'run.name=seed_1', 'run.output_dir=runs/demo/a', 'run.seed=1']
    """
    overrides = [f"{key}={format_value(value)}" for key, value in cell.overrides.items()]
    run = [f"run.name=seed_{cell.seed}", f"run.output_dir={Path(ablation_dir) / cell.arm}", f"run.seed={cell.seed}"]
    return [spec.recipe, "--config", spec.base, *overrides, *run]


def cell_command(
    spec: AblationSpec,
    cell: Cell,
    ablation_dir: str | Path,
    *,
    launcher: str = "",
    resume: bool = True,
    python: str = sys.executable,
) -> list[str]:
    """The command that runs ``cell``: ``[launcher | python] recipe --config base overrides run.*``.

    Workers build it themselves (:meth:`~xai_train.ablation.cellrun.CellRequest.command`, with their own
    Python and a free rendezvous port); this is the same command as the driver would write it.

    Args:
        spec: the ablation (recipe and base config).
        cell: the cell; its overrides come first, then ``run.name``, ``run.output_dir``, ``run.seed``.
        ablation_dir: where the ablation's cells live.
        launcher: e.g. ``"accelerate launch --num_processes 2"`` or ``"torchrun --nproc_per_node 2"``;
            empty runs ``python recipe``.
        resume: add ``run.resume=auto`` (what every attempt runs with: a partial cell continues from its latest
            checkpoint, a new one starts fresh).
        python: the interpreter when no launcher is given.

    Example:
        >>> from xai_train.ablation.spec import Arm
        >>> spec = AblationSpec("demo", "recipes/train_gan.py", "base.yaml", (Arm("a", {}, True),))
        >>> cell = Cell("a", 1, {"xai.alpha": 0.5})
        >>> cell_command(spec, cell, "runs/demo", python="python")[3:]
        ['base.yaml', 'xai.alpha=0.5', 'run.name=seed_1', 'run.output_dir=runs/demo/a', 'run.seed=1', 'run.resume=auto']
    """
    prefix = shlex.split(launcher) if launcher else [python]
    return [*prefix, *cell_args(spec, cell, ablation_dir), *(["run.resume=auto"] if resume else [])]


def estimate_remaining(durations: Sequence[float], remaining: int) -> float | None:
    """ETA: the mean duration of the cells run so far times the cells left (None before the first).

    Example:
        >>> estimate_remaining([10.0, 20.0], 3), estimate_remaining([], 3)
        (45.0, None)
    """
    return sum(durations) / len(durations) * remaining if durations else None


def tail(path: Path, lines: int = 8) -> str:
    """The last ``lines`` lines of a text file ('' if missing)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def plan_requests(
    spec: AblationSpec,
    cells: Sequence[Cell],
    ablation_dir: str | Path,
    *,
    launcher: str = "",
    cwd: str | Path = ".",
    env: Mapping[str, str] | None = None,
) -> list[tuple[Cell, str, CellRequest]]:
    """Each cell with its state on disk and the request that runs it (the same for every backend).

    Example:
        >>> from xai_train.ablation.spec import Arm
        >>> spec = AblationSpec("demo", "recipes/train_gan.py", "base.yaml", (Arm("a", {}, True),))
        >>> [(cell.key, state, request.args[-1]) for cell, state, request in
        ...  plan_requests(spec, [Cell("a", 1, {})], "/nonexistent/demo")]
        [('a/seed_1', 'new', 'run.seed=1')]
    """
    root = Path(cwd).resolve()
    planned = []
    for cell in cells:
        directory = root / cell_dir(ablation_dir, cell)
        args = tuple(cell_args(spec, cell, ablation_dir))
        request = CellRequest(cell.key, str(root), str(directory), args, spec.threads, launcher, env)
        planned.append((cell, cell_status(directory), request))
    return planned


def run_cells(
    spec: AblationSpec,
    cells: Sequence[Cell],
    ablation_dir: str | Path,
    *,
    backend: Backend | None = None,
    launcher: str = "",
    dry_run: bool = False,
    cwd: str | Path = ".",
    env: dict[str, str] | None = None,
    jobs: int = 1,
    print_fn: Callable[[str], None] = print,
    on_update: Callable[[dict[str, CellProgress], Update], None] | None = None,
) -> list[CellOutcome]:
    """Runs the unfinished cells on ``backend`` (default: this machine, ``jobs`` at a time); skips finished ones.

    Every cell runs with ``spec.threads`` torch threads and ``run.resume=auto`` (a partial cell continues from
    its last checkpoint, a new one starts fresh). With one thread per cell, ``jobs`` up to the number of cores
    runs that many cells side by side without changing their numbers (only their wall-clock). A failing cell is
    reported (exit code, log path, the log's last lines) and the others still run.

    Args:
        spec: the ablation.
        cells: from ``expand_cells``.
        ablation_dir: the cells' parent directory (relative paths are relative to ``cwd``).
        backend: a ``LocalBackend``, ``SlurmBackend`` or ``RayBackend``; default ``LocalBackend(jobs)``.
        launcher: command prefix for each cell (see ``cell_command``).
        dry_run: only print each cell's state and exact command, and what the backend would submit.
        cwd: the repository root: the recipe's working directory (recipe/base paths are relative to it).
        env: environment of the local subprocesses (default: inherited), before the thread count is pinned.
        jobs: cells run at the same time by the default local backend (>= 1).
        print_fn: where progress lines go.
        on_update: called with every cell's progress and the update after each state change (the status table,
            the report rewritten after each finished cell).

    Returns:
        One ``CellOutcome`` per cell, in order (``submitted`` for cells a non-waiting backend left running).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs > 1 and launcher and backend is None:
        raise UserError(
            f"--jobs {jobs} with --launcher {launcher!r}: side-by-side multi-process cells would share one "
            "device set; run them one at a time (--jobs 1), without a launcher, or on --backend slurm/ray"
        )
    backend = backend or LocalBackend(jobs)
    planned = plan_requests(spec, cells, ablation_dir, launcher=launcher, cwd=cwd, env=env)
    pinned = "" if spec.threads is None else f"{THREADS_ENV}={spec.threads} OMP_NUM_THREADS={spec.threads} "
    total = len(planned)
    index = {cell.key: number for number, (cell, _, _) in enumerate(planned, start=1)}
    outcomes: dict[str, CellOutcome] = {}
    progress: dict[str, CellProgress] = {}
    todo: list[CellRequest] = []

    def head(cell: Cell) -> str:
        return f"[cell {index[cell.key]}/{total}] arm={cell.arm} seed={cell.seed}"

    for cell, state, request in planned:
        directory = Path(request.directory)
        progress[cell.key] = CellProgress(cell.key, "finished" if state == FINISHED else "queued", str(directory))
        if dry_run:
            print_fn(f"{head(cell)} ({state})\n    {pinned}{shlex.join(request.command())}")
            outcomes[cell.key] = CellOutcome(cell, "skipped" if state == FINISHED else "planned")
        elif state == FINISHED:
            changed = "" if same_settings(directory, request.command()) else f" ({CHANGED_WARNING})"
            print_fn(f"{head(cell)}: finished earlier, skipped{changed}")
            outcomes[cell.key] = CellOutcome(cell, "skipped")
        else:
            todo.append(request)
    if dry_run:
        for line in backend.describe([request for _, state, request in planned if state != FINISHED]):
            print_fn(line)
        return [outcomes[cell.key] for cell, _, _ in planned]

    cell_of = {cell.key: cell for cell, _, _ in planned}
    state_of = {cell.key: state for cell, state, _ in planned}
    durations: list[float] = []
    started = time.perf_counter()
    for update in backend.run(todo) if todo else ():
        cell = cell_of[update.key]
        before = progress[update.key]
        progress[update.key] = before.moved(update)
        if update.state == "running" and before.state != "running":
            verb = "resuming" if state_of[update.key] == PARTIAL or len(before.attempts) > 1 else "starting"
            print_fn(f"{head(cell)}: {verb} (log {cell_dir(ablation_dir, cell) / 'log.txt'})")
        if update.done:
            result = update.result
            seconds = result.seconds if result else 0.0
            log = Path(result.log) if result else Path(progress[update.key].directory) / "log.txt"
            returncode = result.returncode if result else 1
            status = "ok" if update.state == "finished" else "failed"
            outcomes[update.key] = CellOutcome(cell, status, seconds, returncode, log, update.state, update.job_id)
            durations.append(seconds)
            left = len(todo) - len(durations)
            eta = estimate_remaining(durations, left)
            eta_text = format_seconds(eta / min(jobs, max(1, left))) if eta is not None else "?"
            timing = (
                f"took {format_seconds(seconds)}, elapsed {format_seconds(time.perf_counter() - started)}, "
                f"ETA {eta_text} for {left} cell(s)"
            )
            if status == "ok":
                print_fn(f"{head(cell)}: done, {timing}")
            else:
                what = f"exit code {returncode}" if update.state == "failed" else f"LOST ({update.message})"
                print_fn(
                    f"{head(cell)}: FAILED with {what}, {timing}\n"
                    f"    log: {log}\n" + "\n".join("    | " + line for line in tail(log).splitlines())
                )
        if on_update is not None:
            on_update(progress, update)
    for request in todo:
        if request.key not in outcomes:  # a backend that submits and returns (--no-wait)
            outcomes[request.key] = CellOutcome(cell_of[request.key], "submitted", state=progress[request.key].state)
    return [outcomes[cell.key] for cell, _, _ in planned]


def same_settings(directory: Path, command: Sequence[str]) -> bool:
    """Whether ``directory/command.txt`` (if any) holds ``command``'s recipe, config and overrides.

    The interpreter or launcher and ``run.resume`` are ignored: they do not change what a cell computes.

    Example:
        >>> same_settings(Path("/nonexistent"), ["python", "r.py"])
        True
    """
    recorded = directory / "command.txt"
    if not recorded.is_file():
        return True

    def settings(words: Sequence[str]) -> list[str]:
        words = [word for word in words if word != "run.resume=auto"]
        return words[words.index("--config") - 1 :] if "--config" in words else words

    return settings(shlex.split(recorded.read_text())) == settings(command)
