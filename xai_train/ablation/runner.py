"""Running ablation cells: one subprocess per cell, ``jobs`` at a time, resumable, a progress line per cell.

A cell lives in ``<ablation_dir>/<arm>/seed_<seed>/`` (``run.output_dir=<ablation_dir>/<arm>``,
``run.name=seed_<seed>``). Its state is read from the files the recipe leaves there:

- ``finished``: ``summary.json`` exists and says ``steps == max_steps``: skipped;
- ``partial``: the folder exists but the run did not finish (killed, failed): re-run with ``run.resume=auto``,
  which continues from the latest checkpoint (or starts fresh if none was saved);
- ``new``: nothing there yet.

The recipe's stdout and stderr are appended to ``<cell_dir>/log.txt``; the exact command, with the pinned
thread count (:func:`cell_environment`), is in ``<cell_dir>/command.txt``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from xai_train.ablation.spec import AblationSpec, Cell, format_value
from xai_train.atomic import atomic_write
from xai_train.errors import UserError
from xai_train.threads import THREADS_ENV

FINISHED, PARTIAL, NEW = "finished", "partial", "new"
CHANGED_WARNING = "WARNING: it ran with other settings, see its command.txt; a changed ablation needs --output-dir"


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell in this invocation."""

    cell: Cell
    status: str  # "skipped" | "ok" | "failed"
    seconds: float = 0.0
    returncode: int = 0
    log: Path | None = None


def cell_dir(ablation_dir: str | Path, cell: Cell) -> Path:
    """``<ablation_dir>/<arm>/seed_<seed>``, the run directory of ``cell``."""
    return Path(ablation_dir) / cell.arm / f"seed_{cell.seed}"


def cell_status(directory: str | Path) -> str:
    """``"finished"``, ``"partial"`` or ``"new"`` (see the module docstring).

    Example:
        >>> cell_status("/nonexistent/cell")
        'new'
    """
    directory = Path(directory)
    summary = directory / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
            if data.get("steps") is not None and data.get("steps") == data.get("max_steps"):
                return FINISHED
        except json.JSONDecodeError:
            pass
    return PARTIAL if directory.is_dir() and any(directory.iterdir()) else NEW


def cell_command(
    spec: AblationSpec,
    cell: Cell,
    ablation_dir: str | Path,
    *,
    launcher: str = "",
    resume: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The command that runs ``cell``: ``[launcher | python] recipe --config base overrides run.*``.

    Args:
        spec: the ablation (recipe and base config).
        cell: the cell; its overrides come first, then ``run.name``, ``run.output_dir``, ``run.seed``.
        ablation_dir: where the ablation's cells live.
        launcher: e.g. ``"accelerate launch --num_processes 2"`` or ``"torchrun --nproc_per_node 2"``;
            empty runs ``python recipe``.
        resume: add ``run.resume=auto`` (continue a partial cell from its latest checkpoint).
        python: the interpreter when no launcher is given.

    Example:
        >>> from xai_train.ablation.spec import Arm
        >>> spec = AblationSpec("demo", "recipes/train_gan.py", "base.yaml", (Arm("a", {}, True),))
        >>> cell = Cell("a", 1, {"xai.alpha": 0.5})
        >>> cell_command(spec, cell, "runs/demo", python="python", resume=True)[3:]
        ['base.yaml', 'xai.alpha=0.5', 'run.name=seed_1', 'run.output_dir=runs/demo/a', 'run.seed=1', 'run.resume=auto']
    """
    prefix = shlex.split(launcher) if launcher else [python]
    overrides = [f"{key}={format_value(value)}" for key, value in cell.overrides.items()]
    run = [f"run.name=seed_{cell.seed}", f"run.output_dir={Path(ablation_dir) / cell.arm}", f"run.seed={cell.seed}"]
    return [*prefix, spec.recipe, "--config", spec.base, *overrides, *run, *(["run.resume=auto"] if resume else [])]


def format_seconds(seconds: float) -> str:
    """``"1h02m"``, ``"3m07s"`` or ``"42s"``.

    Example:
        >>> format_seconds(3725), format_seconds(187), format_seconds(42.4)
        ('1h02m', '3m07s', '42s')
    """
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


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


def cell_environment(threads: int | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a cell: ``env`` (default: this process's) with the thread count pinned.

    A CPU result depends on the thread count (docs/reproducibility.md), so every cell of an ablation runs with
    the same one: ``XAI_TRAIN_THREADS`` (read by every recipe) and ``OMP_NUM_THREADS`` (read by torch at import).

    Example:
        >>> environment = cell_environment(1, {"PATH": "/bin"})
        >>> environment["XAI_TRAIN_THREADS"], environment["OMP_NUM_THREADS"], environment["PATH"]
        ('1', '1', '/bin')
        >>> "XAI_TRAIN_THREADS" in cell_environment(None, {})
        False
    """
    environment = dict(os.environ if env is None else env)
    if threads is not None:
        environment[THREADS_ENV] = environment["OMP_NUM_THREADS"] = str(threads)
    return environment


def run_cells(
    spec: AblationSpec,
    cells: Sequence[Cell],
    ablation_dir: str | Path,
    *,
    launcher: str = "",
    dry_run: bool = False,
    cwd: str | Path = ".",
    env: dict[str, str] | None = None,
    jobs: int = 1,
    print_fn: Callable[[str], None] = print,
) -> list[CellOutcome]:
    """Runs the cells, ``jobs`` at a time, in order; finished cells are skipped, partial ones resumed.

    Every cell runs with ``spec.threads`` torch threads (:func:`cell_environment`). With one thread per cell,
    ``jobs`` up to the number of cores runs that many cells side by side without changing their numbers (only
    their wall-clock). A failing cell is reported (exit code, log path, the log's last lines) and the others
    still run.

    Args:
        spec: the ablation.
        cells: from ``expand_cells``.
        ablation_dir: the cells' parent directory.
        launcher: command prefix for each cell (see ``cell_command``).
        dry_run: only print each cell's state and exact command.
        cwd: working directory of the subprocesses (the repository root: recipe/base paths are relative).
        env: environment of the subprocesses (default: inherited), before the thread count is pinned.
        jobs: cells run at the same time (>= 1).
        print_fn: where progress lines go.

    Returns:
        One ``CellOutcome`` per cell, in order.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs > 1 and launcher:
        raise UserError(
            f"--jobs {jobs} with --launcher {launcher!r}: side-by-side multi-process cells would share one "
            "rendezvous port and device set; run them one at a time (--jobs 1) or without a launcher"
        )
    environment = cell_environment(spec.threads, env)
    pinned = "" if spec.threads is None else f"{THREADS_ENV}={spec.threads} OMP_NUM_THREADS={spec.threads} "
    outcomes: dict[int, CellOutcome] = {}
    todo: list[tuple[int, Cell, Path, str, list[str]]] = []
    total = len(cells)
    for index, cell in enumerate(cells, start=1):
        directory = cell_dir(ablation_dir, cell)
        state = cell_status(Path(cwd) / directory)
        head = f"[cell {index}/{total}] arm={cell.arm} seed={cell.seed}"
        command = cell_command(spec, cell, ablation_dir, launcher=launcher, resume=state == PARTIAL)
        if dry_run:
            print_fn(f"{head} ({state})\n    {pinned}{shlex.join(command)}")
            outcomes[index] = CellOutcome(cell, "skipped" if state == FINISHED else "planned")
        elif state == FINISHED:
            changed = "" if same_settings(Path(cwd) / directory, command) else f" ({CHANGED_WARNING})"
            print_fn(f"{head}: finished earlier, skipped{changed}")
            outcomes[index] = CellOutcome(cell, "skipped")
        else:
            todo.append((index, cell, directory, state, command))

    lock = threading.Lock()
    durations: list[float] = []
    started = time.perf_counter()

    def run(index: int, cell: Cell, directory: Path, state: str, command: list[str]) -> CellOutcome:
        head = f"[cell {index}/{total}] arm={cell.arm} seed={cell.seed}"
        with lock:
            print_fn(f"{head}: {'resuming' if state == PARTIAL else 'starting'} (log {directory / 'log.txt'})")
        outcome = run_one(cell, command, Path(cwd) / directory, cwd=cwd, env=environment, prefix=pinned)
        with lock:
            durations.append(outcome.seconds)
            left = len(todo) - len(durations)
            eta = estimate_remaining(durations, left)
            eta_text = format_seconds(eta / min(jobs, max(1, left))) if eta is not None else "?"
            timing = (
                f"took {format_seconds(outcome.seconds)}, elapsed {format_seconds(time.perf_counter() - started)}, "
                f"ETA {eta_text} for {left} cell(s)"
            )
            if outcome.status == "ok":
                print_fn(f"{head}: done, {timing}")
            else:
                print_fn(
                    f"{head}: FAILED with exit code {outcome.returncode}, {timing}\n"
                    f"    log: {outcome.log}\n" + "\n".join("    | " + line for line in tail(outcome.log).splitlines())
                )
        return outcome

    if todo:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {item[0]: pool.submit(run, *item) for item in todo}
            for index, future in futures.items():
                outcomes[index] = future.result()
    return [outcomes[index] for index in sorted(outcomes)]


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


def run_one(
    cell: Cell,
    command: Sequence[str],
    directory: Path,
    *,
    cwd: str | Path = ".",
    env: dict[str, str] | None = None,
    prefix: str = "",
) -> CellOutcome:
    """Runs one cell's command with its output appended to ``directory/log.txt``.

    ``command.txt`` records ``prefix`` (the pinned thread variables) and the command, ready to paste.
    """
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "command.txt", prefix + shlex.join(command) + "\n")
    log = directory / "log.txt"
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        handle.flush()
        returncode = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    finished = cell_status(directory) == FINISHED
    ok = returncode == 0 and finished
    if returncode == 0 and not finished:
        with open(log, "a") as handle:
            handle.write("ablate: the recipe exited 0 but left no summary.json with steps == max_steps\n")
    return CellOutcome(cell, "ok" if ok else "failed", seconds, returncode if returncode else (0 if ok else 1), log)
