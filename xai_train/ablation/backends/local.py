"""The local backend: cells as subprocesses of this process, ``jobs`` at a time (threads wait on them)."""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from xai_train.ablation.backends import Update, outcome_state
from xai_train.ablation.cellrun import CellRequest, run_cell, stop_group


class LocalBackend:
    """Runs cells on this machine, ``jobs`` at a time; no recipe outlives the driver (Ctrl-C stops them all).

    Args:
        jobs: cells run at the same time (>= 1).

    Example:
        >>> LocalBackend(jobs=2).describe([])
        ['local: 2 cell(s) at a time on this machine']
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs

    def describe(self, requests: Sequence[CellRequest]) -> list[str]:
        """What a run would do (``--dry-run``)."""
        return [f"local: {self.jobs} cell(s) at a time on this machine"]

    def run(self, requests: Sequence[CellRequest]) -> Iterator[Update]:
        """Runs every request; yields ``queued``, ``running`` and then ``finished``/``failed`` per cell."""
        events: queue.Queue[Update] = queue.Queue()
        running: dict[str, int] = {}

        def work(request: CellRequest) -> Update:
            def started(pid: int) -> None:
                running[request.key] = pid
                events.put(Update(request.key, "running"))

            result = run_cell(request, forward_signals=False, on_start=started)
            running.pop(request.key, None)
            return Update(request.key, outcome_state(result), result=result)

        for request in requests:
            yield Update(request.key, "queued")
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        pending: set[Future[Update]] = {pool.submit(work, request) for request in requests}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while not events.empty():
                    yield events.get()
                for future in done:
                    yield future.result()
        finally:  # Ctrl-C, an error, or the caller stopped listening: stop every recipe still running
            for future in pending:
                future.cancel()
            for pid in list(running.values()):
                stop_group(pid)
            pool.shutdown(wait=True)
