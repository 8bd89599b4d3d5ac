"""Shared pieces of the backend tests: tiny GAN sweeps, the local reference run, and the engines' heads.

The engine tests skip with a printed reason where the engine is not there; ``.ci/run`` brings both up for real
(``scripts/slurm_localhost.sh`` and ``ray start --head``).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY_GAN = {  # a cell costs ~15 s, mostly imports
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
}
# long enough to be pre-empted between two checkpoints (~30 ms a step), evaluated once at the end
LONG_GAN = {**TINY_GAN, "train.max_steps": 400, "train.checkpoint_every": 20, "eval.every_n_steps": 400}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_spec(folder: Path, overrides: dict, arms: list | None = None, seeds=(0, 1), name: str = "tiny") -> Path:
    """An ablation YAML of the GAN recipe with ``overrides``; default arms vanilla and grad."""
    arms = arms or [
        {"name": "vanilla", "baseline": True},
        {"name": "grad", "overrides": {"xai.enabled": True, "xai.method": "grad"}},
    ]
    spec = {
        "recipe": "recipes/train_gan.py",
        "base": "configs/gan/dcgan_digits.yaml",
        "schema": "xai_train.config.gan:GANExperiment",
        "seeds": list(seeds),
        "overrides": overrides,
        "arms": arms,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_fake_spec(folder: Path, seeds=(0,), overrides: dict | None = None) -> Path:
    """An ablation YAML of tests/ablation/fake_recipe.py: arm ``good`` (baseline) and arm ``bad`` (fails)."""
    (folder / "base.yaml").write_text("{}\n")
    arms = [{"name": "good", "baseline": True}, {"name": "bad", "overrides": {"fake.fail": True}}]
    spec = {"recipe": str(Path(__file__).with_name("fake_recipe.py")), "base": str(folder / "base.yaml")}
    spec.update(seeds=list(seeds), overrides=overrides or {}, arms=arms)
    path = folder / "fake.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def ablate(process_groups, spec: Path, out: Path, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``recipes/ablate.py SPEC --output-dir OUT EXTRA...`` from the repository root, in its own process group."""
    command = [sys.executable, "recipes/ablate.py", str(spec), "--output-dir", str(out), *extra]
    return process_groups.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def metric_columns(path: Path) -> dict[str, dict[str, str]]:
    """results.csv per arm, only the metric columns (final_*/best_*): times differ between runs by nature."""
    rows = {}
    for row in csv.DictReader(open(path)):
        rows[row["arm"]] = {k: v for k, v in row.items() if k.startswith(("final_", "best_")) or k in ("n", "seeds")}
    return rows


def live_members(group: int) -> list[int]:
    """Processes of process group ``group`` that are alive (zombies, dead and waiting to be reaped, are not)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def assert_nothing_left(cell: Path) -> None:
    """Every recipe process group an attempt of ``cell`` started is gone (by process group id, not by name)."""
    from xai_train.ablation.cellrun import read_attempts

    groups = [record["recipe_pid"] for record in read_attempts(cell) if "recipe_pid" in record]
    deadline = time.monotonic() + 5.0  # a SIGKILL is sent at once, the death follows shortly
    while any(live_members(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert groups and not any(live_members(group) for group in groups)


class SessionGroups:
    """``process_groups.run`` for session fixtures: a new session per command, SIGKILLed when it ends."""

    def run(self, command, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        process = subprocess.Popen(
            command,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **{k: v for k, v in kwargs.items() if k not in ("capture_output",)},
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass
            process.wait()
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory) -> dict:
    """The 2 arms x 2 seeds TINY_GAN sweep run once by the local backend (``--jobs 2``): its folder, spec and
    stdout; the end-to-end test and the engine tests share it."""
    folder = tmp_path_factory.mktemp("local_sweep")
    spec = write_spec(folder, TINY_GAN)
    done = ablate(SessionGroups(), spec, folder / "sweep", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"folder": folder / "sweep", "spec": spec, "stdout": done.stdout}


@pytest.fixture(scope="session")
def local_long(tmp_path_factory) -> Path:
    """One uninterrupted LONG_GAN cell run by the local backend: what a pre-empted cell must end equal to."""
    folder = tmp_path_factory.mktemp("local_long")
    spec = write_spec(folder, LONG_GAN, arms=[{"name": "vanilla", "baseline": True}], seeds=[0], name="long")
    done = ablate(SessionGroups(), spec, folder / "long")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "long" / "vanilla" / "seed_0"


def assert_same_run(cell: Path, reference: Path) -> None:
    """The final checkpoint's tensors and every evaluation of ``cell`` equal the reference's, bit for bit."""
    import torch
    from safetensors.torch import load_file

    from xai_train.ablation.results import read_metrics_jsonl
    from xai_train.checkpoint import list_checkpoints

    final, expected = list_checkpoints(cell / "checkpoints")[-1], list_checkpoints(reference / "checkpoints")[-1]
    assert final.name == expected.name
    for name in ("model.safetensors", "model_1.safetensors"):
        ours, theirs = load_file(final / name), load_file(expected / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    strip = ("wall", "time", "seconds")
    clean = [
        {k: v for k, v in r.items() if not any(s in k for s in strip)}
        for r in read_metrics_jsonl(cell / "metrics.jsonl")
    ]
    ref = [
        {k: v for k, v in r.items() if not any(s in k for s in strip)}
        for r in read_metrics_jsonl(reference / "metrics.jsonl")
    ]
    assert clean == ref


@pytest.fixture(scope="session")
def slurm_cluster():
    """Skips unless submitit is installed and a Slurm controller answers (scripts/slurm_localhost.sh start)."""
    pytest.importorskip("submitit", reason="submitit not installed: pip install 'xai-train[slurm]'")
    if shutil.which("sbatch") is None:
        pytest.skip("no sbatch: start a one-node Slurm with sudo bash scripts/slurm_localhost.sh start")
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 or "idle" not in done.stdout and "mix" not in done.stdout:
        pytest.skip(
            f"no idle Slurm node ({done.stderr.strip() or done.stdout.strip()}); see scripts/slurm_localhost.sh"
        )


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs for the session (``ray stop`` at the end); its address."""
    pytest.importorskip("ray", reason="ray not installed: pip install 'xai-train[ray]'")
    ray = str(Path(sys.executable).with_name("ray"))
    start = time.perf_counter()
    command = [ray, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6399", "--num-cpus=2"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nray head up in {time.perf_counter() - start:.1f} s")
    yield "127.0.0.1:6399"
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def sweeps():
    """This module's helpers (TINY_GAN, LONG_GAN, write_spec, ablate, ...) for the test files."""
    return sys.modules[__name__]
