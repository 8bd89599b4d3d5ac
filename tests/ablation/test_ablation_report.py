"""Aggregation of a synthetic ablation directory: per-cell reading, means/stds/CI, CSV, Markdown, PNG, HParams."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from xai_train.ablation.report import write_report
from xai_train.ablation.results import collect_cells, read_metrics_jsonl
from xai_train.ablation.spec import AblationSpec, Arm
from xai_train.ablation.stats import minimum_detectable_effect, pooled_std, seeds_needed, t_test_power
from xai_train.errors import UserError

# Final FD per seed: vanilla 10, 12, 14 (mean 12, std 2); xai 8, 9, 10 (mean 9, std 1).
FINAL = {"vanilla": [10.0, 12.0, 14.0], "xai": [8.0, 9.0, 10.0]}
HALFWAY = {"vanilla": [20.0, 20.0, 13.0], "xai": [16.0, 18.0, 20.0]}  # vanilla seed 2: best FD 13 at step 5
TRAIN_SECONDS = {"vanilla": [100.0, 110.0, 120.0], "xai": [150.0, 150.0, 150.0]}


def write_cell(
    directory: Path, fd_half: float, fd_final: float, seconds: float, steps: int = 10, threads: int | None = None
) -> None:
    directory.mkdir(parents=True)
    records = [
        {"step": 5, "extractor": "fake-cnn", "fd": fd_half, "kid": fd_half / 10, "num_samples": 100},
        {"step": 10, "extractor": "fake-cnn", "fd": 99.0, "kid": 9.9, "num_samples": 100},  # before a resume
        {"step": 10, "extractor": "fake-cnn", "fd": fd_final, "kid": fd_final / 10, "num_samples": 100},
    ]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"steps": steps, "max_steps": 10, "train_seconds": seconds, "median_step_time": seconds / 1000}
    if threads is not None:
        summary["fingerprint"] = {"torch_threads": threads, "cpu": "test-cpu", "torch": "2.13.0", "seed": 0}
    (directory / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def ablation(tmp_path):
    for arm in FINAL:
        for seed in range(3):
            write_cell(tmp_path / arm / f"seed_{seed}", HALFWAY[arm][seed], FINAL[arm][seed], TRAIN_SECONDS[arm][seed])
    write_cell(tmp_path / "xai" / "seed_3", 1.0, 1.0, 1.0, steps=5)  # killed half-way: not aggregated
    spec = AblationSpec(
        "synthetic",
        "recipes/train_gan.py",
        "base.yaml",
        (Arm("vanilla", {}, True), Arm("xai", {"xai.enabled": True, "xai.alpha": 0.2})),
    )
    return spec, tmp_path


def test_the_last_line_of_a_step_wins(ablation):
    _, directory = ablation
    records = read_metrics_jsonl(directory / "vanilla" / "seed_0" / "metrics.jsonl")
    assert [(r["step"], r["fd"]) for r in records] == [(5, 20.0), (10, 10.0)]
    cells = collect_cells(directory, ["vanilla", "xai"])
    assert [(c.arm, c.seed, c.finished) for c in cells][-2:] == [("xai", 2, True), ("xai", 3, False)]


def test_results_csv_holds_hand_computed_means_stds_and_ci(ablation):
    spec, directory = ablation
    write_report(spec, directory, command="python recipes/ablate.py synthetic.yaml")
    rows = {row["arm"]: row for row in csv.DictReader(open(directory / "results.csv"))}
    vanilla, xai = rows["vanilla"], rows["xai"]
    assert vanilla["n"] == "3" and xai["n"] == "3" and xai["seeds"] == "0 1 2"  # the killed seed 3 is left out
    assert float(vanilla["final_fd_mean"]) == 12.0 and float(vanilla["final_fd_std"]) == 2.0
    assert float(xai["final_fd_mean"]) == 9.0 and float(xai["final_fd_std"]) == 1.0
    assert float(vanilla["best_fd_mean"]) == pytest.approx((10 + 12 + 13) / 3)  # seed 2's best is at step 5
    assert float(xai["final_kid_mean"]) == pytest.approx(0.9)
    # Welch: se^2 = 4/3 + 1/3, df = 50/17 (see test_ablation_stats); relative = -3 / 12.
    half = scipy_stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert float(xai["final_fd_rel_change"]) == -0.25
    assert float(xai["final_fd_diff_ci_low"]) == pytest.approx(-3 - half)
    assert float(xai["final_fd_rel_ci_high"]) == pytest.approx((-3 + half) / 12)
    assert float(xai["train_seconds_mean"]) == 150.0 and float(xai["train_seconds_rel_change"]) == pytest.approx(
        40 / 110
    )
    assert float(vanilla["final_fd_rel_change"]) == 0.0
    cells = list(csv.DictReader(open(directory / "cells.csv")))
    assert len(cells) == 7 and cells[-1]["finished"] == "False"


def test_markdown_png_and_hparams(ablation):
    spec, directory = ablation
    written = write_report(spec, directory, command="python recipes/ablate.py synthetic.yaml")
    text = (directory / "results.md").read_text()
    assert "`fake-cnn`" in text and "100 generated samples" in text
    assert "| **vanilla** | 3 | 12 ± 2 | 11.7 ± 1.53 | — |" in text
    assert "| xai | 3 | 9 ± 1 | 9 ± 1 | -25% [-60%, +10%] |" in text
    assert "+36% [" in text  # train time 150 vs 110 s
    assert "`xai.enabled=true`, `xai.alpha=0.2`" in text
    assert "![fd_curves.png](fd_curves.png)" in text and "python recipes/ablate.py synthetic.yaml" in text
    assert "| xai | 3 | unfinished |" in text
    for name in ("fd_curves.png", "kid_curves.png"):
        assert (directory / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = sorted((directory / "hparams").rglob("events.out.tfevents.*"))
    assert len(events) == 6 and {p.parent.parent.name for p in events} == {"vanilla", "xai"}
    assert directory / "results.md" in written
    write_report(spec, directory)  # re-aggregating replaces the HParams runs instead of adding to them
    assert len(sorted((directory / "hparams").rglob("events.out.tfevents.*"))) == 6


def test_power_section_matches_the_stats_functions(ablation):
    spec, directory = ablation
    write_report(spec, directory)
    text = (directory / "results.md").read_text()
    pooled = math.sqrt((2 * 2.0**2 + 2 * 1.0**2) / 4)  # vanilla std 2, xai std 1, 2 degrees of freedom each
    assert pooled_std([FINAL["vanilla"], FINAL["xai"]]).std == pytest.approx(pooled)
    effect = minimum_detectable_effect(pooled, 3)
    assert t_test_power(effect, pooled, 3) == pytest.approx(0.8, abs=1e-6)
    row = next(line for line in text.splitlines() if line.startswith("| final FD, unpaired"))
    assert f"{effect:.4g} ({effect / 12 * 100:.4g}%) at 3" in row  # vanilla mean 12
    assert f"| {seeds_needed(1.2, pooled)} |" in row  # a 10% change of 12
    differences = [8.0 - 10.0, 9.0 - 12.0, 10.0 - 14.0]  # xai - vanilla per seed: std 1
    paired = minimum_detectable_effect(1.0, 3, paired=True)
    assert pooled_std([differences]).std == pytest.approx(1.0)
    row = next(line for line in text.splitlines() if line.startswith("| final FD, paired by seed"))
    assert f"{paired:.4g} ({paired / 12 * 100:.4g}%) at 3" in row
    assert f"| {seeds_needed(1.2, 1.0, paired=True)} |" in row
    assert "## Statistical power" in text and "environment: not recorded" in text


def test_cells_from_different_environments_are_refused_unless_allowed(tmp_path):
    for arm in FINAL:
        for seed in range(3):
            threads = 2 if (arm, seed) == ("xai", 1) else 1
            write_cell(tmp_path / arm / f"seed_{seed}", 20.0, FINAL[arm][seed], 100.0, threads=threads)
    spec = AblationSpec("mixed", "recipes/train_gan.py", "base.yaml", (Arm("vanilla", {}, True), Arm("xai", {})))
    with pytest.raises(UserError, match=r"torch_threads: 1 \(vanilla/seed_0, .*; 2 \(xai/seed_1\).*--allow-mixed"):
        write_report(spec, tmp_path)
    assert not (tmp_path / "results.md").exists()
    write_report(spec, tmp_path, allow_mixed=True)
    text = (tmp_path / "results.md").read_text()
    assert "**mixed environments, aggregated with --allow-mixed**: torch_threads: 1" in text
    (tmp_path / "xai" / "seed_1" / "summary.json").write_text(
        (tmp_path / "xai" / "seed_1" / "summary.json").read_text().replace('"torch_threads": 2', '"torch_threads": 1')
    )
    write_report(spec, tmp_path)
    assert (
        "environment (every cell): torch `2.13.0`, cpu `test-cpu`, torch_threads `1`"
        in (tmp_path / "results.md").read_text()
    )


def test_status_lines_come_right_after_the_title(ablation):
    spec, directory = ablation
    status = ["**6 of 8 cells finished.**", "", "## Not finished", "", "- xai/seed_3: 5 of 10 steps"]
    write_report(spec, directory, status=status)
    lines = (directory / "results.md").read_text().splitlines()
    assert lines[:8] == ["# Ablation `synthetic`", "", *status, ""]
    write_report(spec, directory)
    assert (directory / "results.md").read_text().splitlines()[:3] == [
        "# Ablation `synthetic`",
        "",
        "- recipe `recipes/train_gan.py`, base config `base.yaml`; common overrides: none",
    ]
