"""A tiny real ablation through the command line: 2 arms x 2 seeds of the GAN recipe -> CSV, Markdown, PNG;
each cell's fingerprint; and recipes/evaluate.py on a cell's checkpoint: its training-time FD, at 1 and 2 threads."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path, process_groups):
    spec = {
        "recipe": "recipes/train_gan.py",
        "base": "configs/gan/dcgan_digits.yaml",
        "schema": "xai_train.config.gan:GANExperiment",
        "seeds": [0, 1],
        "overrides": {
            "model.g_width": 8,
            "model.d_width": 8,
            "train.batch_size": 16,
            "train.max_steps": 6,
            "train.log_every": 1,
            "train.sample_every": 0,
            "train.checkpoint_every": 3,
            "eval.enabled": True,
            "eval.every_n_steps": 3,
            "eval.num_samples": 64,
            "eval.batch_size": 64,
            "xai.log_every": 0,
        },
        "arms": [
            {"name": "vanilla", "baseline": True},
            {"name": "grad", "overrides": {"xai.enabled": True, "xai.method": "grad"}},
        ],
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(spec))
    out = tmp_path / "ablation"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "recipes/ablate.py", str(config), "--output-dir", str(out), "--jobs", "2"]
    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    done = process_groups.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[cell 4/4] arm=grad seed=1: done" in done.stdout

    rows = {row["arm"]: row for row in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"vanilla", "grad"} and rows["grad"]["n"] == "2"
    assert float(rows["grad"]["final_fd_mean"]) > 0 and float(rows["vanilla"]["final_fd_std"]) >= 0
    text = (out / "results.md").read_text()
    assert "| **vanilla** | 2 |" in text and "digits-32-cnn" in text
    assert (out / "fd_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "vanilla" / "seed_1" / "log.txt").is_file()

    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    again = process_groups.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
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
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
        record = json.loads(evaluated.stdout.strip().splitlines()[-1])
        assert (record["fd"], record["kid"], record["extractor"]) == (final["fd"], final["kid"], final["extractor"])
        assert record["fingerprint"]["torch_threads"] == int(threads)
