"""Aggregation of a synthetic ablation directory: per-cell reading, means/stds/CI, paired tests, Holm, TOST, CSV,
Markdown, settings, PNG, HParams, publishing next to a page."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from xai_train.ablation.page import cells_from_page, publish
from xai_train.ablation.power import minimum_detectable_effect, seeds_needed
from xai_train.ablation.report import write_report
from xai_train.ablation.results import collect_cells, read_metrics_jsonl
from xai_train.ablation.spec import AblationSpec, Arm, PlannedComparison
from xai_train.ablation.stats import holm, tost_paired
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
    # the arms share seeds 0-2: paired; differences -2, -3, -4 (mean -3, std 1); relative = -3 / 12
    half = scipy_stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert float(xai["final_fd_rel_change"]) == -0.25 and xai["final_fd_test"] == "paired"
    assert float(xai["final_fd_diff_ci_low"]) == pytest.approx(-3 - half)
    assert float(xai["final_fd_p"]) == pytest.approx(scipy_stats.ttest_rel(FINAL["xai"], FINAL["vanilla"]).pvalue)
    # Fieller's upper end: the paired test of xai against (1 + r) * vanilla has p = 0.05 there
    end = float(xai["final_fd_rel_ci_high"])
    shifted = np.subtract(FINAL["xai"], (1 + end) * np.asarray(FINAL["vanilla"]))
    assert scipy_stats.ttest_1samp(shifted, 0.0).pvalue == pytest.approx(0.05, abs=1e-9)
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
    assert "| xai | 3 | 9 ± 1 | 9 ± 1 | -25% [-32%, -7%] |" in text  # paired, Fieller
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


def test_every_comparison_has_its_own_test_holm_p_and_detectable_effect(ablation):
    spec, directory = ablation
    write_report(spec, directory)
    rows = list(csv.DictReader(open(directory / "comparisons.csv")))
    assert [(r["family"], r["metric"]) for r in rows] == [("exploratory", "final_fd"), ("exploratory", "final_kid")]
    p_fd = scipy_stats.ttest_rel(FINAL["xai"], FINAL["vanilla"]).pvalue
    p_kid = scipy_stats.ttest_rel(np.divide(FINAL["xai"], 10), np.divide(FINAL["vanilla"], 10)).pvalue
    assert [float(r["p_holm"]) for r in rows] == pytest.approx(holm([p_fd, p_kid]))
    # minimum detectable effect from this comparison's own paired differences (std 1 for FD), not a pooled std
    assert float(rows[0]["mde"]) == pytest.approx(minimum_detectable_effect(1.0, 3, paired=True))
    assert int(rows[0]["seeds_for_10pct"]) == seeds_needed(1.2, 1.0, paired=True)
    text = (directory / "results.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| exploratory | final FD: xai vs vanilla"))
    assert "| paired t, 3 seeds | -25% [-32%, -7%] |" in line
    assert "## Primary comparison" not in text  # nothing declared: the whole page is exploratory


def test_declared_primary_gets_tost_and_secondaries_holm_together(ablation):
    spec, directory = ablation
    for seed, value in enumerate([10.5, 12.4, 13.6]):  # a third arm close to vanilla, its own baseline in one row
        write_cell(directory / "xai_b" / f"seed_{seed}", 20.0, value, 100.0)
    spec = AblationSpec(
        spec.name,
        spec.recipe,
        spec.base,
        (*spec.arms, Arm("xai_b", {})),
        primary=PlannedComparison("xai_b", "fd", "vanilla"),
        secondary=(PlannedComparison("xai", "fd", "vanilla"), PlannedComparison("xai", "kid", "xai_b")),
        equivalence_margin=0.10,
    )
    write_report(spec, directory)
    rows = list(csv.DictReader(open(directory / "comparisons.csv")))
    assert [(r["family"], r["arm"], r["baseline"], r["metric"]) for r in rows][:3] == [
        ("primary", "xai_b", "vanilla", "final_fd"),
        ("secondary", "xai", "vanilla", "final_fd"),
        ("secondary", "xai", "xai_b", "final_kid"),
    ]
    assert {r["family"] for r in rows[3:]} == {"exploratory"} and len(rows) == 5  # xai kid, xai_b kid vs vanilla
    p_secondary = [
        scipy_stats.ttest_rel(FINAL["xai"], FINAL["vanilla"]).pvalue,
        scipy_stats.ttest_rel(np.divide(FINAL["xai"], 10), np.divide([10.5, 12.4, 13.6], 10)).pvalue,
    ]
    assert [float(r["p_holm"]) for r in rows[1:3]] == pytest.approx(holm(p_secondary))
    assert float(rows[0]["p_holm"]) == pytest.approx(float(rows[0]["p"]))  # the primary is tested alone
    tost = tost_paired([10.5, 12.4, 13.6], FINAL["vanilla"], 0.10)
    assert float(rows[0]["tost_p_lower"]) == pytest.approx(tost.p_lower)
    assert float(rows[0]["tost_p_upper"]) == pytest.approx(tost.p_upper)
    assert rows[0]["tost_equivalent"] == str(tost.equivalent)
    text = (directory / "results.md").read_text()
    assert "## Primary comparison" in text and "TOST, paired, margin ±10% of the `vanilla` mean" in text
    assert f"p = {tost.p_lower:.2g} against Δ ≤ −10%" in text
    conclusion = "equivalent within ±10%" if tost.equivalent else "inconclusive at 3 seeds"
    assert f"**Conclusion: {conclusion}" in text


def test_settings_come_from_the_cells_config_and_metrics(ablation):
    spec, directory = ablation
    for arm in FINAL:
        for seed in range(3):
            config = {
                "data": {"name": "mnist5k", "image_size": 32, "fraction": 1.0 if arm == "vanilla" else 0.2},
                "model": {"arch": "dcgan", "g_width": 16, "d_width": 16, "latent_dim": 100},
                "train": {"max_steps": 10, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.99]},
                "eval": {"num_samples": 100, "every_n_steps": 5},
            }
            (directory / arm / f"seed_{seed}" / "config.yaml").write_text(yaml.safe_dump(config))
            metrics = directory / arm / f"seed_{seed}" / "metrics.jsonl"
            records = [json.loads(line) | {"reference": "mnist5k/heldout", "num_real": 1000} for line in
                       metrics.read_text().splitlines()]  # fmt: skip
            metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(spec, directory)
    text = (directory / "results.md").read_text()
    assert "- data: name `mnist5k`, image_size `32`, fraction: vanilla `1.0`, xai `0.2`" in text
    assert "- model: arch `dcgan`, g_width `16`, d_width `16`, latent_dim `100`" in text
    assert "- training: max_steps `10`, batch_size `64`, lr_g `0.0002`, lr_d `0.0002`, betas `[0.5, 0.99]`" in text
    assert "- evaluation: num_samples `100`, every_n_steps `5`" in text
    assert "- evaluation reference set: `mnist5k/heldout` (1000 images)" in text
    assert "- seeds: vanilla 0–2 (3); xai 0–2 (3)" in text and "KID as logged, unscaled" in text


def test_publish_copies_the_cells_next_to_the_page_and_keeps_its_text(ablation, tmp_path_factory):
    spec, directory = ablation
    write_report(spec, directory)
    docs = tmp_path_factory.mktemp("docs")
    page = docs / "synthetic.md"
    page.write_text(
        "# Synthetic\n\nProtocol, fixed beforehand.\n\n<!-- report:begin -->\nold\n<!-- report:end -->\n\nReading.\n"
    )
    publish(directory, page)
    text = page.read_text()
    assert text.startswith("# Synthetic\n\nProtocol, fixed beforehand.\n\n<!-- report:begin -->")
    assert text.endswith("<!-- report:end -->\n\nReading.\n") and "\nold\n" not in text
    assert "![synthetic_fd.png](synthetic_fd.png)" in text and "[synthetic_cells.csv](synthetic_cells.csv)" in text
    assert (docs / "synthetic_cells.csv").read_text() == (directory / "cells.csv").read_text()
    assert (docs / "synthetic_fd.png").read_bytes()[:4] == b"\x89PNG"
    assert (docs / "synthetic_comparisons.csv").is_file() and (docs / "synthetic_results.csv").is_file()
    publish(directory, page)  # publishing again replaces the block, once
    assert page.read_text() == text
    with pytest.raises(UserError, match="has no results.md"):
        publish(tmp_path_factory.mktemp("empty"), page)


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


def test_a_pages_cells_table_reads_back_as_the_cells(ablation):
    spec, directory = ablation
    write_report(spec, directory)
    back = cells_from_page((directory / "results.md").read_text())
    written = list(csv.DictReader(open(directory / "cells.csv")))
    assert [(r["arm"], r["seed"], r["finished"]) for r in back] == [
        (r["arm"], int(r["seed"]), r["finished"] == "True") for r in written
    ]
    assert [r["final_fd"] for r in back if r["finished"]] == [10.0, 12.0, 14.0, 8.0, 9.0, 10.0]
    assert back[2]["best_fd"] == 13.0 and back[2]["best_fd_step"] == 5 and back[0]["train_seconds"] == 100.0
