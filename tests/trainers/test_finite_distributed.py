"""A non-finite loss or a load failure seen by one rank only stops both ranks with the same error.

Two real processes (gloo on CPU); see dist_finite_worker.py for the two failures.
"""

from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_finite_worker.py")


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_every_rank_with_the_same_error(tmp_path, two_ranks):
    for rank, (returncode, stderr) in enumerate(two_ranks(WORKER, str(tmp_path))):
        assert returncode == 1, f"rank {rank}: {stderr[-3000:]}"
        assert "CheckpointError: rank 1: cannot resume from" in stderr, stderr[-3000:]
    finite = [(tmp_path / f"rank{rank}_finite.txt").read_text() for rank in range(2)]
    assert finite[0] == finite[1]
    assert finite[0].startswith("non-finite training values at step 2: rank 1: {'d_loss': inf}; ")
    resume = [(tmp_path / f"rank{rank}_resume.txt").read_text() for rank in range(2)]
    assert resume[0] == resume[1]
    assert resume[0].startswith(f"rank 1: cannot resume from {tmp_path / 'run' / 'checkpoints' / 'step_1'}: ")
    assert "random_states_1.pkl is missing" in resume[0]
