"""The cell runner: exact commands, skipping finished cells, resuming unfinished ones, reporting failures."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import pytest

from xai_train.ablation.cellrun import FINISHED, NEW, PARTIAL
from xai_train.ablation.runner import (
    cell_command,
    cell_dir,
    cell_status,
    estimate_remaining,
    run_cells,
)
from xai_train.ablation.spec import AblationSpec, Arm, Cell, expand_cells
from xai_train.errors import UserError

FAKE_RECIPE = str(Path(__file__).with_name("fake_recipe.py"))


def fake_spec(tmp_path: Path, arms=None) -> AblationSpec:
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    arms = arms or (Arm("a", {}, True), Arm("b", {"fake.fd": 20}))
    return AblationSpec("demo", FAKE_RECIPE, str(base), tuple(arms), seeds=(0, 1), overrides={"train.max_steps": 4})


def write_summary(directory: Path, steps: int, max_steps: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps({"steps": steps, "max_steps": max_steps}))


def test_cell_status(tmp_path):
    assert cell_status(tmp_path / "none") == NEW
    (tmp_path / "empty").mkdir()
    assert cell_status(tmp_path / "empty") == NEW
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    assert cell_status(tmp_path / "killed") == PARTIAL
    write_summary(tmp_path / "stopped", 3, 10)
    assert cell_status(tmp_path / "stopped") == PARTIAL
    write_summary(tmp_path / "done", 10, 10)
    assert cell_status(tmp_path / "done") == FINISHED


def test_cell_command_is_exact():
    spec = AblationSpec("demo", "recipes/train_gan.py", "configs/gan/dcgan_digits.yaml", (Arm("xai", {}, True),))
    cell = Cell("xai", 2, {"xai.enabled": True, "train.betas": [0.5, 0.99]})
    command = cell_command(spec, cell, "runs/ablation/demo", python="python", resume=False)
    assert shlex.join(command) == (
        "python recipes/train_gan.py --config configs/gan/dcgan_digits.yaml xai.enabled=true 'train.betas=[0.5, 0.99]'"
        " run.name=seed_2 run.output_dir=runs/ablation/demo/xai run.seed=2"
    )
    launched = cell_command(
        spec, cell, "runs/ablation/demo", launcher="accelerate launch --num_processes 2", resume=True
    )
    assert launched[:4] == ["accelerate", "launch", "--num_processes", "2"]
    assert launched[4] == "recipes/train_gan.py" and launched[-1] == "run.resume=auto"


def test_estimate_remaining():
    assert estimate_remaining([30.0, 60.0], 4) == 180.0
    assert estimate_remaining([], 4) is None


def test_runs_every_cell_then_skips_finished_ones(tmp_path):
    spec = fake_spec(tmp_path)
    cells = expand_cells(spec)
    lines: list[str] = []
    outcomes = run_cells(spec, cells, tmp_path / "ablation", print_fn=lines.append)
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert sum("done" in line for line in lines) == 4
    assert "[cell 1/4] arm=a seed=0" in lines[0] and "ETA" in lines[1]
    cell = tmp_path / "ablation" / "b" / "seed_1"
    assert (cell / "calls.txt").read_text().count("\n") == 1
    assert "fake.fd=20" in (cell / "command.txt").read_text()
    assert "fake recipe starting" in (cell / "log.txt").read_text()

    lines.clear()
    outcomes = run_cells(spec, cells, tmp_path / "ablation", print_fn=lines.append)
    assert [o.status for o in outcomes] == ["skipped"] * 4
    assert all("finished earlier, skipped" in line for line in lines)
    assert (cell / "calls.txt").read_text().count("\n") == 1  # not run again
    assert not any("WARNING" in line for line in lines)

    lines.clear()
    changed = [Cell(c.arm, c.seed, {**c.overrides, "train.max_steps": 5}) for c in cells]
    run_cells(spec, changed, tmp_path / "ablation", launcher="my-launcher", print_fn=lines.append)
    assert all("skipped (WARNING: it ran with other settings" in line for line in lines)


def test_an_unfinished_cell_resumes_with_resume_auto(tmp_path):
    spec = fake_spec(tmp_path)
    crashed = fake_spec(tmp_path, arms=(Arm("a", {"fake.crash": True}, True),))
    cell = expand_cells(crashed)[0]
    first = run_cells(crashed, [cell], tmp_path / "ablation", print_fn=lambda line: None)
    assert first[0].status == "failed" and cell_status(cell_dir(tmp_path / "ablation", cell)) == PARTIAL

    lines: list[str] = []
    run_cells(spec, [Cell("a", 0, {"train.max_steps": 4})], tmp_path / "ablation", dry_run=True, print_fn=lines.append)
    assert "(partial)" in lines[0] and lines[0].endswith("run.resume=auto")
    outcomes = run_cells(spec, [Cell("a", 0, {"train.max_steps": 4})], tmp_path / "ablation", print_fn=lines.append)
    assert outcomes[0].status == "ok" and "resuming" in lines[-2]
    calls = (tmp_path / "ablation" / "a" / "seed_0" / "calls.txt").read_text().splitlines()
    assert all(call.endswith("run.resume=auto") for call in calls)  # every attempt: a new cell starts fresh


def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path):
    spec = fake_spec(tmp_path, arms=(Arm("good", {}, True), Arm("bad", {"fake.fail": True})))
    lines: list[str] = []
    outcomes = run_cells(spec, expand_cells(spec), tmp_path / "ablation", print_fn=lines.append)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "failed"]
    failure = next(line for line in lines if "FAILED" in line)
    assert "exit code 1" in failure
    assert str(tmp_path / "ablation" / "bad" / "seed_0" / "log.txt") in failure
    assert "error: fake.fail was set" in failure  # the log's tail is shown


def test_dry_run_runs_nothing(tmp_path):
    spec = fake_spec(tmp_path)
    lines: list[str] = []
    outcomes = run_cells(spec, expand_cells(spec), tmp_path / "ablation", dry_run=True, print_fn=lines.append)
    assert len(outcomes) == 4 and not (tmp_path / "ablation").exists()
    assert lines[0].startswith("[cell 1/4] arm=a seed=0 (new)")
    assert f"{shlex.quote(sys.executable)} {FAKE_RECIPE} --config" in lines[0]


def test_cells_run_side_by_side_with_the_thread_count_pinned(tmp_path):
    spec = dataclasses.replace(fake_spec(tmp_path), threads=3)
    spec = dataclasses.replace(spec, overrides={**spec.overrides, "fake.sleep": 1.0})
    cells = expand_cells(spec)
    lines: list[str] = []
    outcomes = run_cells(spec, cells, tmp_path / "ablation", jobs=2, env={"PATH": "/usr/bin"}, print_fn=lines.append)
    assert [o.status for o in outcomes] == ["ok"] * 4 and [o.cell for o in outcomes] == cells  # in cell order
    assert sum("done" in line for line in lines) == 4
    for cell in cells:
        directory = cell_dir(tmp_path / "ablation", cell)
        fingerprint = json.loads((directory / "summary.json").read_text())["fingerprint"]
        assert fingerprint["torch_threads"] == fingerprint["omp_num_threads"] == "3"
        assert (directory / "command.txt").read_text().startswith("XAI_TRAIN_THREADS=3 OMP_NUM_THREADS=3 ")
    walls = [json.loads((cell_dir(tmp_path / "ablation", c) / "summary.json").read_text())["wall"] for c in cells]
    assert walls[1][0] < walls[0][1] and walls[3][0] < walls[2][1]  # two at a time: pairs overlap
    with pytest.raises(UserError, match="--jobs 2 with --launcher 'torchrun --nproc_per_node 2'"):
        run_cells(spec, cells, tmp_path / "other", jobs=2, launcher="torchrun --nproc_per_node 2")


def test_threads_auto_leaves_the_environment_alone(tmp_path):
    spec = dataclasses.replace(fake_spec(tmp_path, arms=(Arm("a", {}, True),)), threads=None)
    run_cells(spec, expand_cells(spec, seeds=[0]), tmp_path / "ablation", env={}, print_fn=lambda line: None)
    summary = json.loads((tmp_path / "ablation" / "a" / "seed_0" / "summary.json").read_text())
    assert summary["fingerprint"]["torch_threads"] is None
