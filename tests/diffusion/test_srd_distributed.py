"""Two real processes (torchrun, gloo on CPU): every rank ends with the same FAM, FH, projections and UNet.

Each rank samples its own EMA images for the FAM (seeded by rank); the mean is all-reduced."""

import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("srd_dist_worker.py")


@pytest.mark.slow
def test_two_processes_compute_the_same_fam(tmp_path, process_groups):
    """Online FH: trained offline at the switch (then averaged over ranks), then on each rank's batch
    (gradients averaged)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(tmp_path),
        "online",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = process_groups.run(command, capture_output=True, text=True, timeout=1800, env=env)  # a hang guard
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert int(rank0["refreshes"]) == 2
    fam = rank0["fam"]
    assert fam.shape == (1, 1, 16, 16) and float(fam.std()) > 0.01  # a real map, not a constant
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
