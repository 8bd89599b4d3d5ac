"""Where cells run: this machine (``local``), a Slurm cluster (``slurm``, submitit) or a Ray cluster (``ray``).

A backend takes :class:`~xai_train.ablation.cellrun.CellRequest` objects, runs
:func:`~xai_train.ablation.cellrun.run_cell` for each on its workers, and yields :class:`Update` objects as
cells change state. Planning (which cells run), the same-settings check, progress and the report stay in
:mod:`xai_train.ablation.runner`; no backend reads or writes numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xai_train.ablation.cellrun import AttemptResult
from xai_train.errors import UserError

BACKENDS = ("local", "slurm", "ray")
STATES = ("queued", "running", "requeued", "finished", "failed", "lost")


@dataclass(frozen=True)
class Update:
    """A cell's new state. ``result`` is set once the cell is done (``finished``/``failed``); ``lost`` means the
    engine no longer knows the job or task and no attempt reported back (its log says what happened last)."""

    key: str
    state: str
    job_id: str = ""
    result: AttemptResult | None = None
    message: str = ""

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "lost")


def outcome_state(result: AttemptResult) -> str:
    """``finished`` for an ``ok`` attempt, else ``failed``.

    Example:
        >>> outcome_state(AttemptResult("a/seed_0", "ok")), outcome_state(AttemptResult("a/seed_0", "busy"))
        ('finished', 'failed')
    """
    return "finished" if result.status == "ok" else "failed"


def missing_engine(backend: str, module: str, extra: str) -> str:
    """The one-line error for an engine client that is not installed.

    Example:
        >>> missing_engine("slurm", "submitit", "slurm")
        "--backend slurm needs submitit, which is not installed: pip install 'xai-train[slurm]'"
    """
    return f"--backend {backend} needs {module}, which is not installed: pip install 'xai-train[{extra}]'"


def make_backend(
    name: str,
    *,
    jobs: int = 1,
    cpus_per_cell: int = 1,
    gpus_per_cell: int = 0,
    max_parallel: int = 0,
    wait: bool = True,
    slurm_folder: str = "",
    partition: str = "",
    time_min: int = 60,
    constraint: str = "",
    ray_address: str = "",
) -> Any:
    """The backend called ``name`` (``local``, ``slurm`` or ``ray``); engine clients are imported only when used.

    Args:
        name: which backend.
        jobs: local cells at a time (``max_parallel``, when given, wins).
        cpus_per_cell: CPUs reserved per cell (Slurm ``--cpus-per-task``, Ray ``num_cpus``).
        gpus_per_cell: GPUs reserved per cell (Slurm ``--gpus-per-node``, Ray ``num_gpus``).
        max_parallel: cells at a time (0: the engine's limit).
        wait: follow the cells to the end (False: submit and return; Slurm only).
        slurm_folder: submitit's folder (required for ``slurm``).
        partition: Slurm partition.
        time_min: Slurm time limit per cell, minutes.
        constraint: Slurm ``--constraint``.
        ray_address: ``ray.init`` address.

    Example:
        >>> make_backend("local", jobs=2).name, make_backend("local", max_parallel=3).jobs
        ('local', 3)
    """
    if name == "local":
        if not wait:
            raise UserError("--no-wait needs --backend slurm: local cells run as children of this command")
        from xai_train.ablation.backends.local import LocalBackend

        return LocalBackend(max_parallel or jobs)
    if name == "slurm":
        from xai_train.ablation.backends.slurm import SlurmBackend

        return SlurmBackend(
            slurm_folder,
            partition=partition,
            time_min=time_min,
            cpus_per_cell=cpus_per_cell,
            gpus_per_cell=gpus_per_cell,
            constraint=constraint,
            max_parallel=max_parallel or 256,
            wait=wait,
        )
    if name == "ray":
        from xai_train.ablation.backends.ray import RayBackend

        return RayBackend(
            ray_address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell, max_parallel=max_parallel, wait=wait
        )
    raise UserError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
