"""recipes/ablate.py: --only / --seeds / --set / --dry-run, and clear errors (no run is started)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from xai_train.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate_recipe", REPO / "recipes" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_only(ablate):
    assert ablate.parse_only(["arm=a,b", "seed=0", "arm=c"]) == (["a", "b", "c"], [0])
    assert ablate.parse_only([]) == (None, None)
    with pytest.raises(ConfigError, match="--only 'seeds=1'"):
        ablate.parse_only(["seeds=1"])


def test_dry_run_with_only_seeds_and_set(ablate, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [
        "configs/ablation/xaigan_alpha.yaml",
        "--dry-run",
        "--only",
        "arm=vanilla,xaigan-alpha=0.5",
        "--seeds",
        "4",
        "5",
        "--only",
        "seed=5",
        "--set",
        "train.max_steps=7",
        "--output-dir",
        "/tmp/x",
    ]
    assert ablate.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 cells (2 arms x 1 seeds)" in out
    assert "[cell 1/2] arm=vanilla seed=5 (new)" in out and "[cell 2/2] arm=xaigan-alpha=0.5 seed=5" in out
    assert "train.max_steps=7" in out and "train.max_steps=1000" not in out
    assert "xai.alpha=0.5 run.name=seed_5 run.output_dir=/tmp/x/xaigan-alpha=0.5 run.seed=5" in out


def test_errors_name_the_problem(ablate, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="unknown arm 'vanila'"):
        ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--only", "arm=vanila"])
    with pytest.raises(ConfigError, match="unknown key 'train.max_step'"):
        ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--set", "train.max_step=7"])
    with pytest.raises(ConfigError, match="--set run.\\* is not allowed"):
        ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--set", "run.seed=7"])
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        ablate.main([str(tmp_path / "nope.yaml"), "--dry-run"])
    with pytest.raises(ConfigError, match="--threads must be a whole number >= 1 or 'auto', got '0'"):
        ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--threads", "0"])
    with pytest.raises(SystemExit):  # argparse: "--jobs: must be a whole number >= 1", exit 2
        ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--jobs", "0"])


def test_dry_run_shows_the_pinned_threads(ablate, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert ablate.main(["configs/ablation/xaigan_alpha.yaml", "--dry-run", "--only", "seed=0", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 thread(s) per cell, 1 at a time" in out
    assert "\n    XAI_TRAIN_THREADS=2 OMP_NUM_THREADS=2 " in out


def test_report_only_publishes_into_a_results_page(ablate, capsys, monkeypatch, tmp_path):
    import yaml

    from xai_train.errors import UserError

    monkeypatch.chdir(REPO)
    (tmp_path / "base.yaml").write_text("{}\n")
    arms = [{"name": "a", "baseline": True}, {"name": "b", "overrides": {"fake.fd": 12}, "seeds": [0]}]
    spec = {"recipe": str(REPO / "tests/ablation/fake_recipe.py"), "base": str(tmp_path / "base.yaml")}
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump({**spec, "seeds": [0, 1], "arms": arms}))
    common = [str(tmp_path / "fake.yaml"), "--output-dir", str(tmp_path / "run")]
    assert ablate.main(common) == 0  # a: seeds 0 and 1; b: its own seed 0 only
    page = tmp_path / "docs" / "fake.md"
    with pytest.raises(UserError, match=f"--publish {page}: folder {page.parent} does not exist"):
        ablate.main([*common, "--report-only", "--publish", str(page)])
    page.parent.mkdir()
    page.write_text("# Fake\n\nProtocol kept.\n")
    capsys.readouterr()
    assert ablate.main([*common, "--report-only", "--publish", str(page)]) == 0
    assert "3 cells (2 arms, 1-2 seeds each)" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("# Fake\n\nProtocol kept.\n") and "<!-- report:begin -->" in text
    assert "**3 of 3 cells finished.**" in text and "Not finished" not in text
    cells = (page.parent / "fake_cells.csv").read_text().splitlines()
    assert len(cells) == 1 + 3 and cells[0].startswith("arm,")
