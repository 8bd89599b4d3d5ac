"""A tiny real ablation through the command line: 2 arms x 2 seeds of the GAN recipe -> CSV, Markdown, PNG;
each cell's fingerprint; and recipes/evaluate.py on a cell's checkpoint: its training-time FD, at 1 and 2 threads."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_ablation_end_to_end(local_sweep, process_groups, sweeps):
    out = local_sweep["folder"]  # 2 arms (vanilla, grad) x 2 seeds of sweeps.TINY_GAN, --jobs 2, at one thread
    assert "[cell 4/4] arm=grad seed=1: done" in local_sweep["stdout"]

    rows = {row["arm"]: row for row in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"vanilla", "grad"} and rows["grad"]["n"] == "2"
    assert float(rows["grad"]["final_fd_mean"]) > 0 and float(rows["vanilla"]["final_fd_std"]) >= 0
    text = (out / "results.md").read_text()
    assert "| **vanilla** | 2 |" in text and "digits-32-cnn" in text
    assert (out / "fd_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "vanilla" / "seed_1" / "log.txt").is_file()

    again = sweeps.ablate(process_groups, local_sweep["spec"], out, "--jobs", "2")
    assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 4

    # every cell ran on one thread with the shipped digits extractor, and says so
    shipped = json.loads((REPO / "xai_train" / "metrics" / "extractors" / "digits-32px-1c.json").read_text())
    for cell in ("vanilla/seed_0", "grad/seed_1"):
        fingerprint = json.loads((out / cell / "summary.json").read_text())["fingerprint"]
        assert fingerprint["torch_threads"] == 1 and fingerprint["seed"] == int(cell[-1])
        assert fingerprint["extractor"] == shipped["name"] and fingerprint["extractor_sha256"] == shipped["sha256"]
    assert f"environment (every cell): torch `{fingerprint['torch']}`" in text and "## Comparisons" in text

    # the same checkpoint gives the same FD bits whatever the thread count, equal to the training-time one
    cell = out / "grad" / "seed_1"
    final = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()][-1]
    for threads in ("1", "2"):
        evaluated = process_groups.run(
            [sys.executable, "recipes/evaluate.py", str(cell), "--threads", threads],
            cwd=REPO,
            env=sweeps.ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
        record = json.loads(evaluated.stdout.strip().splitlines()[-1])
        assert (record["fd"], record["kid"], record["extractor"]) == (final["fd"], final["kid"], final["extractor"])
        assert record["fingerprint"]["torch_threads"] == int(threads)
