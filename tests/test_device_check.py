"""scripts/device_check.sh runs end to end: on a CPU with --cpu-smoke (tiny sizes), every step of the GPU check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_the_results(tmp_path, process_groups):
    results = tmp_path / "results"
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    done = process_groups.run(
        ["bash", str(REPO / "scripts" / "device_check.sh"), str(results), "--cpu-smoke"],
        cwd=tmp_path,  # the script finds the repository itself
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in results.iterdir())
    assert files == ["demo.log", "demo_samples.png", "diffusion.md", "env.txt", "gan.md", "summary.md", "tests.log"]
    summary = (results / "summary.md").read_text()
    steps = [line.split("|")[1:3] for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert [name.strip() for name, _ in steps][1:] == [
        "gpu tests",
        "gan benchmark (no)",
        "diffusion benchmark (no)",
        "gan benchmark (bf16)",
        "diffusion benchmark (bf16)",
        "demo run (bf16)",
    ]
    assert all(code.strip() == "0" for _, code in steps[1:])
    gan = (results / "gan.md").read_text()
    assert gan.index("mixed precision no") < gan.index("mixed precision bf16")
    for explainer in ("vanilla", "grad", "saliency", "deeplift"):
        assert gan.count(f"| dcgan | 8 | {explainer} |") == 2  # one row per precision
    assert (results / "diffusion.md").read_text().count("| plain |") == 2
    assert "done: 4 steps" in (results / "demo.log").read_text()
    assert (results / "demo_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped" in (results / "tests.log").read_text()  # no CUDA here: the gpu tests skip, not fail


def test_unknown_option_is_one_error_line_and_exit_2(tmp_path, process_groups):
    script = REPO / "scripts" / "device_check.sh"
    done = process_groups.run(
        ["bash", str(script), str(tmp_path), "--gpu"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "error: unknown option '--gpu'; expected --cpu-smoke or --no-install"
