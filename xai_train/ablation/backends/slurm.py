"""The Slurm backend: one submitit job array per run, pre-emption-safe, re-attachable, no ``sacct`` needed.

Each cell is one array task running :class:`SlurmCell` (a ``submitit.helpers.Checkpointable``). Slurm sends
``SIGUSR2`` before a time limit (submitit's ``--signal=USR2@90``) or when an operator pre-empts a job
(``scancel --signal=USR2 <job>``); submitit then calls :meth:`SlurmCell.checkpoint`, which stops the recipe
(it ignores USR2, so only the worker decides) and hands submitit the same request to requeue. The requeued
task runs the recipe again with ``run.resume=auto``: it continues bitwise from the cell's last checkpoint.

The job ids are kept in ``<slurm_folder>/jobs.json``; running the same command again attaches to the tasks
that are still queued or running instead of submitting them again. States come from ``squeue`` and from the
files: submitit's result pickle, else the cell folder (a task gone from ``squeue`` with neither is ``lost``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xai_train.ablation.backends import Update, missing_engine, outcome_state
from xai_train.ablation.cellrun import FINISHED, AttemptResult, CellRequest, cell_status, run_cell, stop_group
from xai_train.atomic import atomic_write
from xai_train.errors import UserError

SQUEUE_STATES = {  # squeue's %T -> the table's state
    "PENDING": "queued",
    "CONFIGURING": "queued",
    "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued",
    "RESIZING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
}


def import_submitit() -> Any:
    """``submitit``, or a one-line error naming the extra."""
    try:
        import submitit
    except ImportError:
        raise UserError(missing_engine("slurm", "submitit", "slurm")) from None
    return submitit


class SlurmCell:
    """The callable each array task runs; checkpointable: pre-emption stops the recipe and requeues the task.

    submitit treats any callable with a ``checkpoint`` method as ``submitit.helpers.Checkpointable`` (it tests
    ``hasattr(function, "checkpoint")``), so this class needs no submitit import until a task is pre-empted.
    """

    def __init__(self) -> None:
        self.pid = 0  # the running recipe's process group, for checkpoint()

    def __call__(self, request: CellRequest) -> AttemptResult:
        def started(pid: int) -> None:
            self.pid = pid

        # submitit owns SIGUSR2 (it calls checkpoint) and bypasses SIGTERM; Slurm signals the recipe itself
        return run_cell(request, forward_signals=False, on_start=started)

    def checkpoint(self, request: CellRequest) -> Any:
        """Stops the recipe (its checkpoints are atomic) and returns the same call for submitit to requeue."""
        if self.pid:
            stop_group(self.pid)
        self.pid = 0
        submitit = import_submitit()
        return submitit.helpers.DelayedSubmission(SlurmCell(), request)


def squeue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{job_id: (squeue state, node)}`` for the given jobs or array tasks still known to Slurm.

    Array tasks are listed one per line (``-r``), as ``<array job>_<task>``.
    """
    if not job_ids:
        return {}
    arrays = sorted({job.split("_")[0] for job in job_ids})
    done = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%N"], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise UserError(f"squeue failed: {done.stderr.strip() or done.stdout.strip()}")
    states = {}
    for line in done.stdout.splitlines():
        job, _, rest = line.partition("|")
        state, _, node = rest.partition("|")
        states[job.strip()] = (state.strip(), node.strip())
    return states


class SlurmBackend:
    """Submits cells as one submitit job array and follows them to the end.

    Args:
        folder: submitit's folder (job scripts, pickles, Slurm logs) and ``jobs.json``; on the shared filesystem.
        partition: ``--partition`` ('' for the cluster's default).
        time_min: the time limit of each task, in minutes (the pre-emption signal comes 90 s before it).
        cpus_per_cell: ``--cpus-per-task``.
        gpus_per_cell: ``--gpus-per-node`` (one task per cell; Slurm sets ``CUDA_VISIBLE_DEVICES``).
        constraint: ``--constraint`` ('' for none).
        max_parallel: the array's throttle (``--array=0-N%max_parallel``).
        wait: follow the cells to the end; False returns right after submitting (``--no-wait``).
        poll_s: seconds between two ``squeue`` calls.

    Example:
        >>> SlurmBackend("/shared/sweep/slurm", partition="gpu", gpus_per_cell=1, max_parallel=4).describe([])[0]
        'slurm: job array of 0 task(s), at most 4 at a time, partition gpu, 60 min, 1 CPU(s) + 1 GPU(s) per cell'
    """

    name = "slurm"

    def __init__(
        self,
        folder: str | Path,
        *,
        partition: str = "",
        time_min: int = 60,
        cpus_per_cell: int = 1,
        gpus_per_cell: int = 0,
        constraint: str = "",
        max_parallel: int = 256,
        wait: bool = True,
        poll_s: float = 2.0,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.partition, self.time_min, self.constraint = partition, time_min, constraint
        self.cpus_per_cell, self.gpus_per_cell, self.max_parallel = cpus_per_cell, gpus_per_cell, max_parallel
        self.wait, self.poll_s = wait, poll_s

    def parameters(self, count: int) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters of the array."""
        parameters: dict[str, Any] = {
            "time": self.time_min,
            "cpus_per_task": self.cpus_per_cell,
            "array_parallelism": self.max_parallel,
            "job_name": "ablate",
            "additional_parameters": {"requeue": True},
        }
        if self.gpus_per_cell:
            parameters["gpus_per_node"] = self.gpus_per_cell
        if self.partition:
            parameters["partition"] = self.partition
        if self.constraint:
            parameters["constraint"] = self.constraint
        return parameters

    def describe(self, requests: Sequence[CellRequest]) -> list[str]:
        """What would be submitted (``--dry-run``)."""
        gpus = f" + {self.gpus_per_cell} GPU(s)" if self.gpus_per_cell else ""
        return [
            f"slurm: job array of {len(requests)} task(s), at most {self.max_parallel} at a time, partition "
            f"{self.partition or '(default)'}, {self.time_min} min, {self.cpus_per_cell} CPU(s){gpus} per cell"
            + (f", constraint {self.constraint}" if self.constraint else ""),
            f"    submitit folder {self.folder} (job ids in jobs.json); each task runs "
            "xai_train.ablation.cellrun.run_cell with the request above; USR2 requeues it",
        ]

    def jobs_file(self) -> Path:
        return self.folder / "jobs.json"

    def recorded(self) -> dict[str, str]:
        """``{cell key: job id}`` of earlier submissions."""
        path = self.jobs_file()
        return json.loads(path.read_text()) if path.is_file() else {}

    def submit(self, requests: Sequence[CellRequest]) -> dict[str, str]:
        """Submits ``requests`` as one job array; returns and records ``{cell key: job id}``."""
        if not requests:
            return {}
        submitit = import_submitit()
        if shutil.which("sbatch") is None:
            raise UserError("--backend slurm: sbatch is not on PATH; run the sweep where Slurm's clients are")
        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=3)
        executor.update_parameters(**self.parameters(len(requests)))
        with executor.batch():
            jobs = [executor.submit(SlurmCell(), request) for request in requests]
        ids = {request.key: job.job_id for request, job in zip(requests, jobs, strict=True)}
        atomic_write(self.jobs_file(), json.dumps({**self.recorded(), **ids}, indent=2, sort_keys=True) + "\n")
        return ids

    def result(self, job_id: str) -> tuple[AttemptResult | None, str]:
        """The task's returned result from submitit's pickle, or None and why."""
        submitit = import_submitit()
        job = submitit.SlurmJob(folder=self.folder, job_id=job_id)
        if not job.paths.result_pickle.exists():
            return None, "no result from the task"
        outcome, value = submitit.core.utils.pickle_load(job.paths.result_pickle)
        if outcome == "success":
            return value, ""
        return None, str(value).strip().splitlines()[-1] if str(value).strip() else "the task raised"

    def run(self, requests: Sequence[CellRequest]) -> Iterator[Update]:
        """Submits the cells (attaching to live tasks of an earlier run) and yields their state changes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        recorded = self.recorded()
        alive = squeue_states([recorded[r.key] for r in requests if r.key in recorded])
        attach = {r.key: recorded[r.key] for r in requests if recorded.get(r.key) in alive}
        ids = {**attach, **self.submit([r for r in requests if r.key not in attach])}
        by_key = {r.key: r for r in requests}
        shown: dict[str, str] = {}
        for key in ids:
            shown[key] = "queued"
            yield Update(key, "queued", ids[key], message="attached" if key in attach else "submitted")
        if not self.wait:
            return
        missing_since: dict[str, float] = {}
        while len(shown) > sum(state in ("finished", "failed", "lost") for state in shown.values()):
            states = squeue_states([ids[k] for k, s in shown.items() if s not in ("finished", "failed", "lost")])
            for key, job in ids.items():
                if shown[key] in ("finished", "failed", "lost"):
                    continue
                if job in states:
                    missing_since.pop(key, None)
                    state = SQUEUE_STATES.get(states[job][0], "running")
                    if state != shown[key]:
                        shown[key] = state
                        yield Update(key, state, job)
                    continue
                result, why = self.result(job)
                if result is None and time.time() - missing_since.setdefault(key, time.time()) < 3 * self.poll_s:
                    continue  # a task that just ended: its result pickle may still be on its way
                if result is not None and result.status == "busy":
                    why = f"another attempt holds the cell's lease (see {result.log})"
                    result = None
                if result is None:
                    finished = cell_status(by_key[key].directory) == FINISHED
                    shown[key] = "finished" if finished else "lost"
                    yield Update(key, shown[key], job, message=why if not finished else "")
                else:
                    shown[key] = outcome_state(result)
                    yield Update(key, shown[key], job, result=result)
            time.sleep(self.poll_s)
