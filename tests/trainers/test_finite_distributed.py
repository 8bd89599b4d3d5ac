"""A non-finite loss or a load failure seen by one rank only stops both ranks with the same error.

Two real processes (gloo on CPU); see dist_finite_worker.py for the two failures.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_finite_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_every_rank_with_the_same_error(tmp_path, process_groups):
    # The environment torchrun sets, but without its agent: torchrun kills the other workers as soon as
    # one fails, which would hide whether each rank stopped by itself (and with which message).
    port = free_port()
    processes = []
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
        command = [sys.executable, str(WORKER), str(tmp_path)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        processes.append(process_groups.start(command, env=env, **pipes))
    try:
        # Generous: two processes on a loaded 2-core machine. A rank-local decision hangs here instead.
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        process_groups.close()  # each rank and anything it started (SIGKILL to its process group)
    for rank, (process, (_, stderr)) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 1, f"rank {rank}: {stderr[-3000:]}"
        assert "CheckpointError: rank 1: cannot resume from" in stderr, stderr[-3000:]
    finite = [(tmp_path / f"rank{rank}_finite.txt").read_text() for rank in range(2)]
    assert finite[0] == finite[1]
    assert finite[0].startswith("non-finite training values at step 2: rank 1: {'d_loss': inf}; ")
    resume = [(tmp_path / f"rank{rank}_resume.txt").read_text() for rank in range(2)]
    assert resume[0] == resume[1]
    assert resume[0].startswith(f"rank 1: cannot resume from {tmp_path / 'run' / 'checkpoints' / 'step_1'}: ")
    assert "random_states_1.pkl is missing" in resume[0]
