"""The process_groups fixture: a timeout kills the command and the workers it started, not only the launcher."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

# A launcher like torchrun: starts a worker, prints its pid, then waits for it.
LAUNCHER = (
    "import subprocess, sys, time\n"
    "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(worker.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_timeout_kills_the_launcher_and_its_workers(process_groups):
    with pytest.raises(subprocess.TimeoutExpired) as info:
        process_groups.run([sys.executable, "-c", LAUNCHER], timeout=3, capture_output=True, text=True)
    worker = int(info.value.stdout.split()[0])
    launcher = process_groups.started[-1]
    assert launcher.returncode is not None  # reaped
    assert wait_dead(worker), f"worker {worker} outlived the timeout"


def test_run_returns_like_subprocess_run(process_groups):
    done = process_groups.run([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1]); sys.exit(3)"],
                              timeout=60, capture_output=True, text=True, input="abc")  # fmt: skip
    assert (done.returncode, done.stdout) == (3, "cba\n")
    with pytest.raises(subprocess.CalledProcessError):
        process_groups.run([sys.executable, "-c", "raise SystemExit(1)"], timeout=60, check=True)
