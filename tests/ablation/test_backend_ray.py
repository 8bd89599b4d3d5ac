"""The Ray backend on a real Ray head (127.0.0.1, 2 CPUs): same numbers as local, a killed worker, a failure.

Needs ray (``pip install 'xai-train[ray]'``); skipped with the reason otherwise. The head is started once per
session (``ray start --head``) and stopped at the end (``ray stop``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xai_train.ablation.cellrun import read_attempts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_a_sweep_on_ray_gives_the_local_numbers(tmp_path, ray_cluster, local_sweep, process_groups, sweeps):
    out = tmp_path / "ablation"
    spec = sweeps.write_spec(tmp_path, sweeps.TINY_GAN)
    done = sweeps.ablate(process_groups, spec, out, "--backend", "ray", "--ray-address", ray_cluster)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sweeps.metric_columns(out / "results.csv") == sweeps.metric_columns(local_sweep["folder"] / "results.csv")
    assert "**4 of 4 cells finished.**" in (out / "results.md").read_text()
    for cell in ("vanilla/seed_0", "grad/seed_1"):
        sweeps.assert_nothing_left(out / cell)


def test_a_killed_worker_is_retried_and_the_cell_ends_bitwise_equal(
    tmp_path, ray_cluster, local_long, process_groups, sweeps
):
    arms = [{"name": "vanilla", "baseline": True}]
    spec = sweeps.write_spec(tmp_path, sweeps.LONG_GAN, arms=arms, seeds=[0], name="long")
    out, cell = tmp_path / "ablation", tmp_path / "ablation" / "vanilla" / "seed_0"
    command = [sys.executable, "recipes/ablate.py", str(spec), "--output-dir", str(out)]
    command += ["--backend", "ray", "--ray-address", ray_cluster]
    driver = process_groups.start(
        command, cwd=REPO, env=sweeps.ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600
    while not (cell / "checkpoints" / "step_20").is_dir():  # mid-run
        assert time.monotonic() < deadline and driver.poll() is None, driver.stdout.read() if driver.poll() else ""
        time.sleep(0.2)
    worker = read_attempts(cell)[0]["pid"]  # the Ray worker process running the task
    os.kill(worker, signal.SIGKILL)
    output, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, output
    records = read_attempts(cell)
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2 and starts[0]["pid"] == worker != starts[1]["pid"]
    assert [r["status"] for r in records if r["event"] == "end"] == ["ok"]  # the killed attempt wrote no end
    sweeps.assert_same_run(cell, local_long)
    first_recipe = int(open(cell / "log.txt").read().count("attempt 1"))
    assert first_recipe == 1
    sweeps.assert_nothing_left(cell)


def test_a_failing_cell_is_not_retried_and_exits_1(tmp_path, ray_cluster, process_groups, sweeps):
    spec = sweeps.write_fake_spec(tmp_path)
    out = tmp_path / "ablation"
    done = sweeps.ablate(process_groups, spec, out, "--backend", "ray", "--ray-address", ray_cluster)
    assert done.returncode == 1, done.stdout + done.stderr
    log = out / "bad" / "seed_0" / "log.txt"
    assert f"bad/seed_0: failed, log {log}" in done.stderr
    assert json.loads((out / "failures.json").read_text())[0]["log"] == str(log)
    assert len([r for r in read_attempts(out / "bad" / "seed_0") if r["event"] == "start"]) == 1  # not retried
    again = sweeps.ablate(process_groups, spec, out, "--backend", "ray", "--ray-address", ray_cluster)
    assert again.returncode == 1 and again.stdout.count("finished earlier, skipped") == 1
