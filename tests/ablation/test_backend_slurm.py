"""The Slurm backend on a real (one-node) Slurm: same numbers as local, USR2 pre-emption, failures, re-attach.

Needs submitit and a controller: ``sudo bash scripts/slurm_localhost.sh run -- .venv/bin/python -m pytest
tests/ablation/test_backend_slurm.py`` (``.ci/run`` does this); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from xai_train.ablation.cellrun import read_attempts

pytestmark = pytest.mark.slow


def test_a_sweep_on_slurm_gives_the_local_numbers(tmp_path, slurm_cluster, local_sweep, process_groups, sweeps):
    out = tmp_path / "ablation"
    done = sweeps.ablate(
        process_groups, sweeps.write_spec(tmp_path, sweeps.TINY_GAN), out, "--backend", "slurm", "--time-min", "10"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sweeps.metric_columns(out / "results.csv") == sweeps.metric_columns(local_sweep["folder"] / "results.csv")
    assert "**4 of 4 cells finished.**" in (out / "results.md").read_text()
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 4 and len({job.split("_")[0] for job in jobs.values()}) == 1  # one job array
    for cell in jobs:
        sweeps.assert_nothing_left(out / cell)


def test_a_preempted_cell_is_requeued_and_ends_bitwise_equal(
    tmp_path, slurm_cluster, local_long, process_groups, sweeps
):
    spec = sweeps.write_spec(
        tmp_path, sweeps.LONG_GAN, arms=[{"name": "vanilla", "baseline": True}], seeds=[0], name="long"
    )
    out, cell = tmp_path / "ablation", tmp_path / "ablation" / "vanilla" / "seed_0"
    submitted = sweeps.ablate(process_groups, spec, out, "--backend", "slurm", "--no-wait")
    assert submitted.returncode == 0 and "run the same command again" in submitted.stdout, submitted.stderr
    job = json.loads((out / "slurm" / "jobs.json").read_text())["vanilla/seed_0"]
    deadline = time.monotonic() + 600
    while not (cell / "checkpoints" / "step_20").is_dir():  # mid-run: one checkpoint of ten saved
        assert time.monotonic() < deadline, (cell / "log.txt").read_text()
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
    release_requeued(job, cell)
    attached = sweeps.ablate(process_groups, spec, out, "--backend", "slurm")  # re-attaches to the requeued task
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert json.loads((out / "slurm" / "jobs.json").read_text())["vanilla/seed_0"] == job  # not resubmitted
    records = read_attempts(cell)  # the stopped attempt may not write its end line: Slurm kills the task
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2 and {r["job_id"] for r in starts} == {job}
    assert [r["status"] for r in records if r["event"] == "end"][-1] == "ok"
    assert "running (requeued 1)" in attached.stdout or "requeued 1" in attached.stdout
    sweeps.assert_same_run(cell, local_long)
    sweeps.assert_nothing_left(cell)


def release_requeued(job: str, cell: Path, timeout: float = 180.0) -> None:
    """Lets the requeued ``job`` start now: Slurm holds a requeued job ~2 min (Reason=BeginTime), which is only
    waiting time here; the requeue itself (same job id, a second attempt that resumes) is what the test checks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len([r for r in read_attempts(cell) if r["event"] == "start"]) < 2:
        reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True, timeout=30)
        if "BeginTime" in reason.stdout:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
            return
        time.sleep(0.5)


def test_a_failing_cell_exits_1_and_a_rerun_reruns_only_it(tmp_path, slurm_cluster, process_groups, sweeps):
    spec = sweeps.write_fake_spec(tmp_path)
    out = tmp_path / "ablation"
    done = sweeps.ablate(process_groups, spec, out, "--backend", "slurm")
    assert done.returncode == 1, done.stdout + done.stderr
    log = out / "bad" / "seed_0" / "log.txt"
    assert f"bad/seed_0: failed, log {log}" in done.stderr
    assert json.loads((out / "failures.json").read_text())[0]["log"] == str(log)
    assert f"| bad/seed_0 | failed | `{log}` |" in (out / "results.md").read_text()
    again = sweeps.ablate(process_groups, spec, out, "--backend", "slurm")
    assert again.returncode == 1 and "good/seed_0" not in json.dumps(json.loads((out / "failures.json").read_text()))
    assert again.stdout.count("finished earlier, skipped") == 1
    assert len([r for r in read_attempts(out / "good" / "seed_0") if r["event"] == "start"]) == 1
    assert len([r for r in read_attempts(out / "bad" / "seed_0") if r["event"] == "start"]) == 2
