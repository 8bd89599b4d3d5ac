"""One ablation cell on a worker: the picklable request, and the function every backend runs.

A backend (local threads, a Slurm job, a Ray task) only ships a :class:`CellRequest` to a worker and calls
:func:`run_cell` there. The worker builds the command with its own Python and environment (the engine's
``CUDA_VISIBLE_DEVICES``, a free rendezvous port for ``torchrun``/``accelerate launch``), always with
``run.resume=auto``, so a requeued or retried attempt continues from the cell's last checkpoint. The cell folder
holds what the driver reads back:

- ``lease``: an exclusive ``flock`` held while an attempt runs; a second attempt on the same cell (a stale
  job, a retried task racing its predecessor) is refused instead of writing the same checkpoints;
- ``attempts.jsonl``: one line when an attempt starts (host, pid, job id) and one when it ends (exit code,
  outcome), appended, so the driver's status table and a dead driver's successor see the same history;
- ``log.txt`` (appended) and ``command.txt`` (the exact command).

The recipe runs in its own process group, which is SIGKILLed when the attempt ends (nothing is left behind);
it dies with its worker (``PR_SET_PDEATHSIG``), and it ignores ``SIGUSR2``, the pre-emption signal, which the
worker handles (the recipe needs no signal handling: every checkpoint is atomic and resume is bitwise).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xai_train.atomic import atomic_write
from xai_train.threads import THREADS_ENV

FINISHED, PARTIAL, NEW = "finished", "partial", "new"
PREEMPT_SIGNAL = signal.SIGUSR2  # USR1 is NCCL's; submitit and Slurm's --signal use USR2 too
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL: the recipe's checkpoints are atomic, a hard stop loses nothing
PR_SET_PDEATHSIG = 1
RESUME = "run.resume=auto"
# the environment variables engines use to name a job or task; recorded with each attempt
JOB_ID_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "RAY_TASK_ID")


@dataclass(frozen=True)
class CellRequest:
    """Everything a worker needs to run one cell; plain data, so every engine can pickle it.

    ``args`` is the recipe part of the command (``recipe --config base overrides run.*``); the interpreter or
    launcher is added on the worker. Paths in ``args`` are relative to ``root`` (the repository root, the
    recipe's working directory); ``directory`` is the cell folder, absolute.
    """

    key: str  # "<arm>/seed_<seed>"
    root: str
    directory: str
    args: tuple[str, ...]
    threads: int | None = 1  # torch threads (None: the recipe's default)
    launcher: str = ""  # e.g. "torchrun --nproc_per_node 2"; "" runs the worker's own Python
    env: Mapping[str, str] | None = None  # None: the worker's environment (the engine's devices included)

    def command(self, python: str = sys.executable, port: int | None = None) -> list[str]:
        """The command on this worker: ``[launcher | python] args... run.resume=auto``.

        Args:
            python: the interpreter when there is no launcher.
            port: a rendezvous port given to ``torchrun``/``accelerate launch`` unless the launcher names one.

        Example:
            >>> request = CellRequest("a/seed_0", "/repo", "/repo/runs/a/seed_0", ("r.py", "--config", "b.yaml"))
            >>> request.command(python="python")
            ['python', 'r.py', '--config', 'b.yaml', 'run.resume=auto']
            >>> CellRequest("a/seed_0", "/", "/c", ("r.py",), launcher="torchrun --nproc_per_node 2").command(port=4242)
            ['torchrun', '--master-port=4242', '--nproc_per_node', '2', 'r.py', 'run.resume=auto']
        """
        prefix = with_port(shlex.split(self.launcher), port) if self.launcher else [python]
        return [*prefix, *self.args, *([] if RESUME in self.args else [RESUME])]


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt of a cell ended. ``status``: ``ok`` | ``failed`` | ``busy`` (another attempt holds the
    lease) | ``interrupted`` (the worker was stopped: pre-emption, cancellation)."""

    key: str
    status: str
    returncode: int = 0
    seconds: float = 0.0
    log: str = ""
    host: str = field(default_factory=socket.gethostname)
    attempt: int = 0


def cell_status(directory: str | Path) -> str:
    """``"finished"``, ``"partial"`` or ``"new"`` (see :mod:`xai_train.ablation.runner`).

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


def with_port(words: Sequence[str], port: int | None) -> list[str]:
    """Adds a rendezvous port to a ``torchrun`` or ``accelerate launch`` prefix that names none.

    Two multi-process cells on one node would otherwise both take the default port 29500.

    Example:
        >>> with_port(["accelerate", "launch", "--num_processes", "2"], 5000)
        ['accelerate', 'launch', '--main_process_port', '5000', '--num_processes', '2']
        >>> with_port(["torchrun", "--master_port", "7"], 5000), with_port(["mpirun"], 5000)
        (['torchrun', '--master_port', '7'], ['mpirun'])
    """
    words = list(words)
    if port is None or not words or any("port" in word for word in words):
        return words
    if Path(words[0]).name == "torchrun":
        return [words[0], f"--master-port={port}", *words[1:]]
    if Path(words[0]).name == "accelerate" and words[1:2] == ["launch"]:
        return [*words[:2], "--main_process_port", str(port), *words[2:]]
    return words


def free_port() -> int:
    """A TCP port free on this host right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def read_attempts(directory: str | Path) -> list[dict[str, Any]]:
    """The records of ``<directory>/attempts.jsonl`` ([] if none; a torn last line is skipped).

    Example:
        >>> read_attempts("/nonexistent")
        []
    """
    path = Path(directory) / "attempts.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # an attempt killed while appending; the next line is whole again
    return records


def append_attempt(directory: Path, record: Mapping[str, Any]) -> None:
    """Appends one JSON line to ``attempts.jsonl`` (a single ``write`` on an ``O_APPEND`` file)."""
    with open(directory / "attempts.jsonl", "a") as handle:
        handle.write(json.dumps(dict(record), sort_keys=True) + "\n")


class LeaseBusy(RuntimeError):
    """Another attempt holds the cell's lease."""


class Lease:
    """An exclusive ``flock`` on ``<directory>/lease``, released when the holder exits or dies.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with Lease(folder, {"pid": 1}):
        ...     try:
        ...         Lease(folder).__enter__()
        ...     except LeaseBusy as err:
        ...         print("busy")
        busy
    """

    def __init__(self, directory: str | Path, holder: Mapping[str, Any] | None = None) -> None:
        self.path = Path(directory) / "lease"
        self.holder = dict(holder or {})
        self.handle: Any = None

    def __enter__(self) -> Lease:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            held_by = handle.read().strip() or "unknown"
            handle.close()
            raise LeaseBusy(f"{self.path} is held by {held_by}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.holder, sort_keys=True) + "\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()  # closing the descriptor releases the lock


def _child_setup() -> None:
    """In the recipe's process before exec: ignore the pre-emption signal, die with the worker."""
    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def exited(pid: int) -> bool:
    """Whether the process ``pid`` is gone or a zombie (dead, not yet waited for by its parent).

    Example:
        >>> exited(os.getpid())
        False
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def stop_group(pid: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not exited(pid):
            time.sleep(0.05)


def job_id() -> str:
    """The engine's id of this job or task, from its environment ('' outside one).

    Example:
        >>> import os
        >>> os.environ.pop("SLURM_JOB_ID", None) and None
        >>> job_id() if not any(name in os.environ for name in JOB_ID_ENV) else ""
        ''
    """
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("RAY_TASK_ID", "")


def cell_env(threads: int | None, base: Mapping[str, str], port: int) -> dict[str, str]:
    """The recipe's environment: ``base`` with the thread count pinned and ``MASTER_PORT`` set.

    Example:
        >>> env = cell_env(1, {"PATH": "/bin"}, 5000)
        >>> env["XAI_TRAIN_THREADS"], env["OMP_NUM_THREADS"], env["MASTER_PORT"]
        ('1', '1', '5000')
    """
    env = dict(base)
    if threads is not None:
        env[THREADS_ENV] = env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("MASTER_PORT", str(port))
    return env


def run_cell(
    request: CellRequest,
    *,
    forward_signals: bool = True,
    on_start: Callable[[int], None] | None = None,
) -> AttemptResult:
    """Runs one attempt of a cell here: lease, command, own process group, log and ``attempts.jsonl``.

    Args:
        request: the cell.
        forward_signals: turn this process's SIGTERM and SIGUSR2 into a stop of the recipe (SIGTERM to its
            group, SIGKILL after a grace period); only possible on the main thread, ignored elsewhere.
            Slurm jobs pass False: submitit owns SIGUSR2 there and calls the checkpoint method instead.
        on_start: called with the recipe's pid (= its process group id) once it runs.

    Returns:
        The attempt's result; ``ok`` only when the recipe exited 0 *and* left a finished ``summary.json``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> request = CellRequest("a/seed_0", str(folder), str(folder / "cell"), ("-c", "print('hi')"))
        >>> result = run_cell(request)
        >>> result.status, result.returncode, (folder / "cell" / "log.txt").read_text().splitlines()[-2:]
        ('failed', 1, ['hi', 'ablate: the recipe exited 0 but left no summary.json with steps == max_steps'])
    """
    directory = Path(request.directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "log.txt"
    attempt = 1 + sum(record.get("event") == "start" for record in read_attempts(directory))
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id(), "attempt": attempt}
    try:
        lease = Lease(directory, holder).__enter__()
    except LeaseBusy as err:
        with open(log, "a") as handle:
            handle.write(f"ablate: attempt on {holder['host']} (job {holder['job_id'] or '-'}) not run: {err}\n")
        return AttemptResult(request.key, "busy", 1, 0.0, str(log), attempt=attempt)
    start, process, returncode, status = time.time(), None, 1, "interrupted"
    previous: dict[int, Any] = {}
    try:
        port = free_port()
        command = request.command(port=port)
        env = cell_env(request.threads, os.environ if request.env is None else request.env, port)
        threads = request.threads
        pinned = "" if threads is None else f"{THREADS_ENV}={threads} OMP_NUM_THREADS={threads} "
        atomic_write(directory / "command.txt", pinned + shlex.join(command) + "\n")
        append_attempt(directory, {**holder, "event": "start", "time": start, "command": shlex.join(command)})
        with open(log, "a") as handle:
            handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt} on {holder['host']}: ")
            handle.write(shlex.join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(
                command,
                cwd=request.root,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        if on_start is not None:
            on_start(process.pid)
        if forward_signals and threading.current_thread() is threading.main_thread():

            def stop(signum: int, frame: object) -> None:
                stop_group(process.pid)

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, PREEMPT_SIGNAL)}
        returncode = process.wait()
        finished = cell_status(directory) == FINISHED
        status = "ok" if returncode == 0 and finished else "failed"
        if returncode == 0 and not finished:
            returncode = 1
            with open(log, "a") as handle:
                handle.write("ablate: the recipe exited 0 but left no summary.json with steps == max_steps\n")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process is not None:
            stop_group(process.pid, grace=0.0 if status != "interrupted" else STOP_GRACE_S)  # leftover children
        seconds = time.time() - start
        end = {"event": "end", "time": time.time(), "status": status, "returncode": returncode}
        if process is not None:
            end["recipe_pid"] = process.pid  # its process group id too: tests check that nothing is left
        append_attempt(directory, {**holder, **end})
        lease.__exit__(None, None, None)
    return AttemptResult(request.key, status, returncode, seconds, str(log), attempt=attempt)
