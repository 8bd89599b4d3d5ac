"""scripts/device_check.sh and its offline install (scripts/offline_install.py): on a CPU, with hand-made wheels.

The end-to-end test runs the whole check with ``--cpu-smoke`` (tiny sizes) and a carried wheel, as the
offline GPU machine would with wheels/; the others pin each failure to one line.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "device_check.sh"
INSTALLER = REPO / "scripts" / "offline_install.py"
FILES = ["demo_samples.png", "diffusion.md", "gan.md", "log.txt", "summary.md"]


def device_check(process_groups, results: Path, *options: str, timeout: float = 600, cwd=None, **environment: str):
    """``bash scripts/device_check.sh RESULTS OPTIONS...`` at one OpenMP thread with ``environment`` added."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **environment)
    command = ["bash", str(SCRIPT), str(results), *options]
    return process_groups.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def make_wheel(folder: Path, name: str, requires: tuple[str, ...] = (), value: int = 7) -> Path:
    """A minimal valid pure-Python wheel: module ``name`` with ``VALUE = value``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value}\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: "
        + name
        + "\nVersion: 1.0\n"
        + "".join(f"Requires-Dist: {line}\n" for line in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def run_installer(process_groups, wheels: Path, target: Path):
    return process_groups.run(
        [sys.executable, str(INSTALLER), "--wheels", str(wheels), "--target", str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def test_installer_installs_a_carried_wheel_and_checks_its_requirements(tmp_path, process_groups):
    # torch is met by this Python; an extra's requirement is not a requirement.
    make_wheel(tmp_path / "wheels", "xaitiny", requires=("torch>=2.0", 'no-such-dist>=1; extra == "test"'))
    done = run_installer(process_groups, tmp_path / "wheels", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"ready: {sys.executable} + 1 wheels (xaitiny)"
    assert (tmp_path / "site" / "xaitiny.py").read_text() == "VALUE = 7\n"
    assert done.stderr == ""


def test_an_unmet_requirement_is_one_error_line(tmp_path, process_groups):
    make_wheel(tmp_path / "wheels", "xaitiny", requires=("torch>=2.0", "no-such-dist>=1.2"))
    done = run_installer(process_groups, tmp_path / "wheels", tmp_path / "site")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: xaitiny needs 'no-such-dist>=1.2' and {sys.executable} lacks it (it is not installed); "
        "add it to scripts/device_wheels.sh and run make device-wheels again"
    ]


def test_the_first_failed_install_stops_with_one_line(tmp_path, process_groups):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "zzlater")  # sorted after the broken one: never installed
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    done = run_installer(process_groups, wheels, tmp_path / "site")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "error: installing broken-1.0-py3-none-any.whl failed (pip exit 1); pip's output is above"
    )
    assert [line for line in done.stderr.splitlines() if line.startswith("error: installing")] == [
        done.stderr.splitlines()[-1]
    ]
    assert not (tmp_path / "site" / "zzlater.py").exists()


def test_two_versions_of_one_wheel_are_refused_before_pip_runs(tmp_path, process_groups):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "xaitiny")
    (wheels / "xaitiny-1.0-py3-none-any.whl").rename(wheels / "xaitiny-0.9-py3-none-any.whl")
    make_wheel(wheels, "xaitiny")
    done = run_installer(process_groups, wheels, tmp_path / "site")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: '{wheels}' holds several versions of xaitiny: keep one (make device-wheels)"
    ]


def test_the_check_stops_at_a_failed_install_before_any_step(tmp_path, process_groups):
    wheels = tmp_path / "wheels"
    (wheels).mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    done = device_check(process_groups, tmp_path / "results", "--no-install", PYTHON=sys.executable, WHEELS=str(wheels))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: installing broken-1.0-py3-none-any.whl failed (pip exit 1); pip's output is above"
    ]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["log.txt"]
    assert "== gpu tests" not in (tmp_path / "results" / "log.txt").read_text()


def test_unknown_option_is_one_error_line_and_exit_2(tmp_path, process_groups):
    done = device_check(process_groups, tmp_path, "--gpu")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "error: unknown option '--gpu'; expected --cpu-smoke or --no-install"


@pytest.mark.slow
def test_cpu_smoke_installs_carried_wheels_runs_every_step_and_writes_five_files(tmp_path, process_groups):
    results = tmp_path / "results"
    make_wheel(tmp_path / "wheels", "xaitiny", requires=("torch>=2.0",))
    wheels = str(tmp_path / "wheels")
    # cwd: the script finds the repository itself
    done = device_check(process_groups, results, "--cpu-smoke", timeout=1800, cwd=tmp_path, WHEELS=wheels)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == FILES
    summary = (results / "summary.md").read_text()
    steps = [line.split("|")[1:3] for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert [name.strip() for name, _ in steps][1:] == [
        "offline install",
        "gpu tests",
        "gan benchmark (no)",
        "diffusion benchmark (no)",
        "gan benchmark (bf16)",
        "diffusion benchmark (bf16)",
        "demo run (bf16)",
    ]
    assert all(code.strip() == "0" for _, code in steps[1:])
    assert "torch threads" in summary and "of a 1500 s budget" in summary
    log = (results / "log.txt").read_text()
    assert "+ 1 wheels (xaitiny)" in log  # the carried wheel went through the offline install
    assert "done: 4 steps" in log  # the demo
    assert "skipped" in log  # no CUDA here: the gpu tests skip, not fail
    gan = (results / "gan.md").read_text()
    assert gan.index("mixed precision no") < gan.index("mixed precision bf16")
    for explainer in ("vanilla", "grad", "saliency", "deeplift"):
        assert gan.count(f"| dcgan | 8 | {explainer} |") == 2  # one row per precision
    assert (results / "diffusion.md").read_text().count("| plain |") == 2
    assert (results / "demo_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_spent_budget_skips_the_steps_and_fails(tmp_path, process_groups):
    done = device_check(process_groups, tmp_path / "results", "--cpu-smoke", BUDGET="0", WHEELS=str(tmp_path / "none"))
    assert done.returncode == 1
    summary = (tmp_path / "results" / "summary.md").read_text()
    skipped = [line for line in summary.splitlines() if "skipped: the 0 s budget is spent" in line]
    assert [line.split("|")[1].strip() for line in skipped] == [
        "gpu tests",
        "gan benchmark (no)",
        "diffusion benchmark (no)",
        "gan benchmark (bf16)",
        "diffusion benchmark (bf16)",
        "demo run (bf16)",
    ]
