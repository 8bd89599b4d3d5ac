"""Two real ranks (gloo on CPU) started the way torchrun would, without its agent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_ranks(process_groups) -> Callable[..., list[tuple[int, str]]]:
    """``run(worker, *args)``: the worker script as ranks 0 and 1 of one job; each rank's (exit code, stderr).

    The environment torchrun sets, but without its agent: torchrun kills the other workers as soon as one
    fails, which would hide whether each rank stopped by itself (and with which message).
    """

    def run(worker: Path, *args: str) -> list[tuple[int, str]]:
        port, processes = free_port(), []
        for rank in range(2):
            env = {
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
            }
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
            processes.append(process_groups.start([sys.executable, str(worker), *args], env=env, **pipes))
        try:
            # Generous: two processes on a loaded 2-core machine. A rank-local decision hangs here instead.
            outputs = [process.communicate(timeout=300) for process in processes]
        finally:
            process_groups.close()  # each rank and anything it started (SIGKILL to its process group)
        return [(process.returncode, stderr) for process, (_, stderr) in zip(processes, outputs, strict=True)]

    return run
