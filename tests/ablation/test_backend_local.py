"""The worker side every backend shares (run_cell) and the local backend through the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from xai_train.ablation.cellrun import CellRequest, Lease, read_attempts, run_cell

REPO = Path(__file__).resolve().parents[2]
# a "recipe" that leaves a grandchild behind and waits: what a launcher with workers looks like
SPAWNER = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '600']); print('child', p.pid, flush=True)"


def inline_request(tmp_path: Path, code: str) -> CellRequest:
    return CellRequest("a/seed_0", str(tmp_path), str(tmp_path / "cell"), ("-c", code), threads=1)


def child_pid(log: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines() if log.is_file() else []:
            if line.startswith("child "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"no child in {log}")


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is dead within ``timeout`` s (a SIGKILL is sent at once, the death follows shortly)."""
    deadline = time.monotonic() + timeout
    while not dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return dead(pid)


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"  # a zombie is gone too


def test_an_attempt_leaves_no_process_behind_and_records_itself(tmp_path):
    result = run_cell(inline_request(tmp_path, SPAWNER))
    assert result.status == "failed" and result.returncode == 1  # exit 0 but no finished summary.json
    pid = child_pid(tmp_path / "cell" / "log.txt")
    assert gone(pid)  # the grandchild was in the recipe's process group, SIGKILLed when the attempt ended
    records = read_attempts(tmp_path / "cell")
    assert [r["event"] for r in records] == ["start", "end"] and records[1]["status"] == "failed"
    assert records[0]["command"].endswith("run.resume=auto") and records[0]["attempt"] == 1
    command = (tmp_path / "cell" / "command.txt").read_text()
    assert command.startswith(f"XAI_TRAIN_THREADS=1 OMP_NUM_THREADS=1 {sys.executable} -c")


def test_a_second_attempt_on_a_leased_cell_is_refused(tmp_path):
    (tmp_path / "cell").mkdir()
    with Lease(tmp_path / "cell", {"host": "elsewhere", "pid": 1}):
        result = run_cell(inline_request(tmp_path, "print('must not run')"))
    assert result.status == "busy"
    log = (tmp_path / "cell" / "log.txt").read_text()
    assert "must not run" not in log and '"host": "elsewhere"' in log


def test_sigterm_to_the_worker_stops_the_recipe_group(tmp_path, sweeps):
    request = inline_request(tmp_path, SPAWNER + "; time.sleep(600)")
    worker = (
        "import pickle, sys; from xai_train.ablation.cellrun import run_cell; "
        "print(run_cell(pickle.loads(sys.stdin.buffer.read())).status, flush=True)"
    )
    import pickle

    process = subprocess.Popen(
        [sys.executable, "-c", worker], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False
    )
    try:
        process.stdin.write(pickle.dumps(request))
        process.stdin.close()
        pid = child_pid(tmp_path / "cell" / "log.txt")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        out = process.stdout.read()
    finally:
        process.kill()
    assert out.decode().strip() == "failed" and gone(pid)
    end = read_attempts(tmp_path / "cell")[-1]
    assert end["event"] == "end" and end["returncode"] == -signal.SIGTERM
    sweeps.assert_nothing_left(tmp_path / "cell")


def test_a_failing_cell_is_listed_and_a_rerun_reruns_only_it(tmp_path, process_groups, sweeps):
    config = sweeps.write_fake_spec(tmp_path, seeds=(0, 1), overrides={"train.max_steps": 4})
    out = tmp_path / "ablation"
    command = [sys.executable, "recipes/ablate.py", str(config), "--output-dir", str(out), "--jobs", "2"]
    done = process_groups.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    bad_log = str(out / "bad" / "seed_1" / "log.txt")
    assert f"bad/seed_1: failed, log {bad_log}" in done.stderr
    failures = json.loads((out / "failures.json").read_text())
    assert sorted(f["cell"] for f in failures) == ["bad/seed_0", "bad/seed_1"]
    assert {f["log"] for f in failures} >= {bad_log} and all(f["returncode"] == 1 for f in failures)
    text = (out / "results.md").read_text()
    assert "**2 of 4 cells finished.**" in text and "### Not finished" in text
    assert f"| bad/seed_1 | failed | `{bad_log}` |" in text
    assert text.index("cells finished") < text.index("\n- recipe")  # right after the title

    again = process_groups.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and again.stdout.count("finished earlier, skipped") == 2
    calls = {cell: (out / cell / "calls.txt").read_text().count("\n") for cell in ("good/seed_0", "bad/seed_0")}
    assert calls == {"good/seed_0": 1, "bad/seed_0": 2}
    assert len([r for r in read_attempts(out / "bad" / "seed_0") if r["event"] == "start"]) == 2
