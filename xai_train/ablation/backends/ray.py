"""The Ray backend: one plain Ray task per cell on a cluster that shares the repository and the ablation folder.

Each task runs :func:`~xai_train.ablation.cellrun.run_cell` with ``num_cpus``/``num_gpus`` (Ray sets
``CUDA_VISIBLE_DEVICES``). A lost worker (a killed process, a dead node) is retried by Ray (``max_retries``):
the recipe died with it (``PR_SET_PDEATHSIG``), the lease was released, and the retry resumes the cell from its
last checkpoint. A failing exit status is a result, not an exception, so it is never retried.

No ``working_dir`` is uploaded: a copy would put relative ``runs/`` paths in a throw-away folder. A probe task on
every node first checks that the node sees the repository and the ablation folder (a file the driver has just
written, so a same-named local folder does not pass).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xai_train.ablation.backends import Update, missing_engine, outcome_state
from xai_train.ablation.cellrun import CellRequest, read_attempts, run_cell
from xai_train.errors import UserError


def import_ray() -> Any:
    """``ray``, or a one-line error naming the extra."""
    try:
        import ray
    except ImportError:
        raise UserError(missing_engine("ray", "ray", "ray")) from None
    return ray


def probe(root: str, token_file: str) -> tuple[str, list[str]]:
    """On a node: its host name and what it cannot see (empty: the shared filesystem is there).

    Example:
        >>> probe("/nonexistent", "/nonexistent/token")[1]
        ['repository /nonexistent', 'ablation folder file /nonexistent/token']
    """
    missing = []
    if not (Path(root) / "recipes").is_dir():
        missing.append(f"repository {root}")
    if not Path(token_file).is_file():
        missing.append(f"ablation folder file {token_file}")
    return socket.gethostname(), missing


def ray_cell(request: CellRequest) -> Any:
    """The task body: one attempt of a cell, the worker's SIGTERM forwarded to the recipe."""
    return run_cell(request, forward_signals=True)


class RayBackend:
    """Runs cells as Ray tasks on the cluster at ``address``.

    Args:
        address: ``ray.init`` address: ``auto`` or ``ray://head:10001``; '' joins ``RAY_ADDRESS`` or a cluster
            started on this machine, else starts a local one.
        cpus_per_cell: ``num_cpus`` of each task.
        gpus_per_cell: ``num_gpus`` of each task.
        max_parallel: tasks in flight at once (the rest wait on the driver); default: as many as Ray fits.
        max_retries: retries of a task whose worker died (never of a failing recipe).
        wait: must be True: Ray tasks end with their driver (use ``ray job submit`` for a detached sweep).

    Example:
        >>> RayBackend("auto", gpus_per_cell=1).describe([])[0]
        'ray: 0 task(s) on auto, 1 CPU(s) + 1 GPU(s) each, retried 3 time(s) if a worker dies'
    """

    name = "ray"

    def __init__(
        self,
        address: str = "",
        *,
        cpus_per_cell: int = 1,
        gpus_per_cell: int = 0,
        max_parallel: int = 0,
        max_retries: int = 3,
        wait: bool = True,
    ) -> None:
        if not wait:
            raise UserError(
                "--no-wait with --backend ray: Ray tasks are cancelled when their driver exits; run the sweep "
                "itself on the cluster instead: ray job submit -- python recipes/ablate.py ... --backend ray"
            )
        self.address, self.cpus_per_cell, self.gpus_per_cell = address, cpus_per_cell, gpus_per_cell
        self.max_parallel, self.max_retries = max_parallel, max_retries

    def describe(self, requests: Sequence[CellRequest]) -> list[str]:
        """What would be submitted (``--dry-run``)."""
        gpus = f" + {self.gpus_per_cell} GPU(s)" if self.gpus_per_cell else ""
        throttle = f", at most {self.max_parallel} at a time" if self.max_parallel else ""
        return [
            f"ray: {len(requests)} task(s) on {self.address or 'RAY_ADDRESS or a local cluster'}, "
            f"{self.cpus_per_cell} CPU(s){gpus} each{throttle}, retried {self.max_retries} time(s) if a worker dies"
        ]

    def check_nodes(self, ray: Any, requests: Sequence[CellRequest]) -> None:
        """Runs :func:`probe` on every alive node; a node without the shared folders is a one-line error."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        root = requests[0].root
        folder = Path(requests[0].directory).parents[1]
        folder.mkdir(parents=True, exist_ok=True)
        token = folder / f".ray_probe_{uuid.uuid4().hex}"
        token.write_text("probe\n")
        try:
            task = ray.remote(num_cpus=0)(probe)
            nodes = [node for node in ray.nodes() if node.get("Alive")]
            answers = ray.get(
                [
                    task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                        root, str(token)
                    )
                    for node in nodes
                ]
            )
        finally:
            token.unlink(missing_ok=True)
        blind = [f"{host}: {', '.join(missing)}" for host, missing in answers if missing]
        if blind:
            raise UserError(
                "--backend ray needs the repository and the ablation folder on a filesystem every node shares "
                f"(same paths); not seen on {'; '.join(blind)}"
            )

    def run(self, requests: Sequence[CellRequest]) -> Iterator[Update]:
        """Submits one task per cell and yields ``queued`` and then ``finished``/``failed``/``lost`` per cell."""
        if not requests:
            return
        ray = import_ray()
        ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False)
        try:
            self.check_nodes(ray, requests)
            task = ray.remote(ray_cell).options(
                num_cpus=self.cpus_per_cell,
                num_gpus=self.gpus_per_cell,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            waiting = list(requests)
            running: dict[Any, CellRequest] = {}
            shown: dict[str, str] = {}
            for request in requests:
                yield Update(request.key, "queued")
            while waiting or running:
                while waiting and (not self.max_parallel or len(running) < self.max_parallel):
                    request = waiting.pop(0)
                    running[task.remote(request)] = request
                ready, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
                for ref, request in running.items():  # an attempt has started: the worker wrote its start line
                    records = read_attempts(request.directory)
                    state = "running" if records and records[-1].get("event") == "start" else "queued"
                    if ref not in ready and shown.get(request.key) != state:
                        shown[request.key] = state
                        yield Update(request.key, state, ref.task_id().hex())
                for ref in ready:
                    request = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except (ray.exceptions.RayError, OSError) as err:  # retries exhausted, node lost, cancelled
                        yield Update(request.key, "lost", ref.task_id().hex(), message=str(err).splitlines()[0])
                        continue
                    yield Update(request.key, outcome_state(result), ref.task_id().hex(), result=result)
        finally:
            ray.shutdown()
