"""EvalMetrics in a hand-written Accelerate loop, on one process and (``torchrun``) on two.

Run as a script by the two-process test: ``torchrun --standalone --nproc_per_node 2 <this file> OUT_DIR``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from einops import rearrange
from torch import Tensor, nn

from callbacks import EvalMetrics
from xai_train import CallbackList, TrainState
from xai_train.data.digits import load_digits_dataset
from xai_train.metrics import (
    ClassifierFeatures,
    ClassifierRecipe,
    FeatureClassifier,
    FeatureMetrics,
    frechet_distance_from_features,
    kernel_inception_distance,
    precision_recall,
    recipe_key,
)

STEPS, EVERY = 12, 5


class TinyGenerator(nn.Module):
    latent_dim = 4

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 64), nn.Tanh())

    def sample_latent(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def forward(self, z: Tensor) -> Tensor:
        return rearrange(self.net(z), "b (c h w) -> b c h w", c=1, h=8)


def toy_extractor() -> ClassifierFeatures:
    torch.manual_seed(123)  # same random features on every rank
    return ClassifierFeatures(FeatureClassifier(1, 10, width=4, num_features=8), "toy-cnn", (1, 8, 8), {})


def run_loop(run_dir: Path | None, **options) -> tuple[EvalMetrics, list[int]]:
    """A plain moment-matching generator loop plus the four callback lines; returns the callback and saves."""
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    real = load_digits_dataset(image_size=8).images
    generator = TinyGenerator()
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    generator, optimizer = accelerator.prepare(generator, optimizer)
    settings = dict(every_n_steps=EVERY, num_samples=100, batch_size=32, kid_subsets=5, kid_subset_size=50)
    settings.update(real_images=real, extractor=toy_extractor())
    eval_metrics = EvalMetrics(**{**settings, **options})
    callbacks = CallbackList([eval_metrics])
    state = TrainState(accelerator, max_steps=STEPS, models={"generator": generator}, run_dir=run_dir)
    callbacks.on_train_start(state)
    saved = []
    for step in range(STEPS):
        batch = real[torch.randint(0, len(real), (32,))]
        fake = generator(torch.randn(32, 4))
        loss = (fake.mean(0) - batch.mean(0)).square().mean() + (fake.std(0) - batch.std(0)).square().mean()
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()
        state.step = step + 1
        callbacks.on_step_end(state, {"loss": loss.item()})
        if eval_metrics.best_step == state.step:  # where a trainer would save the best checkpoint
            saved.append(state.step)
    callbacks.on_train_end(state)
    return eval_metrics, saved


def read_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loop_writes_metrics_and_tracks_the_best_step(tmp_path):
    eval_metrics, saved = run_loop(tmp_path, metrics=("fd", "kid", "pr"))
    lines = read_lines(tmp_path)
    assert [line["step"] for line in lines] == [5, 10, 12]  # every 5 steps and at max_steps
    expected = {
        "step",
        "extractor",
        "fd",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "num_real",
        "num_fake",
        "num_samples",
        "is_best",
        "eval_time_s",
        "extractor_sha256",
        "reference",
    }
    assert all(set(line) == expected for line in lines)
    assert all(line["reference"] == "given" for line in lines)  # real_images passed in
    assert all(line["extractor"] == "toy-cnn" and line["num_samples"] == 100 for line in lines)
    assert all(line["extractor_sha256"] is None for line in lines)  # a user's extractor without a hash
    assert eval_metrics.fingerprint() == {
        "extractor": "toy-cnn",
        "extractor_sha256": None,
        "eval_reference": "given (1797 images)",
    }
    assert all(line["num_real"] == 1797 for line in lines)
    best = min(lines, key=lambda line: line["fd"])
    assert eval_metrics.best_step == best["step"] and eval_metrics.best_value == best["fd"]
    running = [
        line["step"] for i, line in enumerate(lines) if line["fd"] < min([math.inf] + [x["fd"] for x in lines[:i]])
    ]
    assert [line["step"] for line in lines if line["is_best"]] == running == saved
    best_json = json.loads((tmp_path / "best.json").read_text())
    assert best_json["step"] == best["step"] and best_json["monitor"] == "fd"
    assert best_json["metrics"]["extractor"] == "toy-cnn" and best_json["value"] == best["fd"]


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    eval_metrics, _ = run_loop(None)
    CallbackList([eval_metrics]).save(tmp_path)
    restored = EvalMetrics(real_images=torch.zeros(4, 1, 8, 8), extractor=toy_extractor())
    CallbackList([restored]).load(tmp_path)  # torch.load(weights_only=True)
    assert restored.state_dict() == eval_metrics.state_dict()
    assert restored.best_step == eval_metrics.best_step and restored.last_step == STEPS


def test_higher_is_better_monitor_and_no_run_dir():
    eval_metrics, _ = run_loop(None, metrics=("pr",), monitor="recall")
    assert eval_metrics.best_metrics["recall"] == eval_metrics.best_value
    assert eval_metrics.best_value >= eval_metrics.last_metrics["recall"]


def test_sample_fn_draws_the_same_samples_at_every_evaluation(tmp_path):
    calls = []

    def sample_fn(n: int, generator: torch.Generator) -> Tensor:  # a frozen "diffusion model"
        calls.append(n)
        return torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1

    run_loop(tmp_path, sample_fn=sample_fn, metrics=("fd", "kid"))
    lines = read_lines(tmp_path)
    assert calls == [32, 32, 32, 4] * 3
    assert len({line["fd"] for line in lines}) == 1 and len({line["kid"] for line in lines}) == 1


def test_best_step_follows_the_monitored_metric(tmp_path):
    real = load_digits_dataset(image_size=8).images
    noise_at_step = {1: 0.5, 2: 0.1, 3: 0.3, 4: 0.05, 5: 0.2}
    state = TrainState(Accelerator(cpu=True), max_steps=5, run_dir=tmp_path)

    def sample_fn(n: int, generator: torch.Generator) -> Tensor:  # quality set by the step
        noise = torch.randn(n, 1, 8, 8, generator=generator)
        return (real[:n] + noise_at_step[state.step] * noise).clamp(-1, 1)

    eval_metrics = EvalMetrics(
        real_images=real,
        extractor=toy_extractor(),
        sample_fn=sample_fn,
        every_n_steps=1,
        num_samples=200,
        metrics=("fd",),
    )
    best_after_step = []
    for step in noise_at_step:
        state.step = step
        eval_metrics.on_step_end(state, {})
        best_after_step.append(eval_metrics.best_step)
    assert best_after_step == [1, 2, 2, 4, 4]
    assert [line["is_best"] for line in read_lines(tmp_path)] == [True, True, False, True, False]
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 4


def test_evaluates_at_train_end_when_stopped_early(tmp_path):
    accelerator = Accelerator(cpu=True)
    eval_metrics = EvalMetrics(
        real_images=load_digits_dataset(image_size=8).images,
        extractor=toy_extractor(),
        every_n_steps=100,
        num_samples=64,
        metrics=("fd",),
    )
    state = TrainState(accelerator, step=7, max_steps=100, models={"generator": TinyGenerator()}, run_dir=tmp_path)
    eval_metrics.on_train_start(state)
    eval_metrics.on_step_end(state, {})
    eval_metrics.on_train_end(state)
    assert [line["step"] for line in read_lines(tmp_path)] == [7]
    eval_metrics.on_train_end(state)  # already evaluated at this step: nothing new
    assert len(read_lines(tmp_path)) == 1


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="needs `dataset`, or both"):
        EvalMetrics(real_images=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="monitor 'recall' is not computed"):
        EvalMetrics("digits", monitor="recall")
    with pytest.raises(ValueError, match="unknown metrics \\['fid'\\]"):
        EvalMetrics("digits", metrics=("fid",))


def test_dataset_name_builds_the_real_set_and_a_cached_classifier(tmp_path):
    recipe = ClassifierRecipe(width=4, num_features=8, epochs=1)
    eval_metrics, _ = run_loop(
        tmp_path / "run",
        real_images=None,
        extractor=None,
        dataset="digits",
        image_size=8,
        recipe=recipe,
        cache_dir=tmp_path / "cache",
        metrics=("fd",),
    )
    key = recipe_key("digits", 8, 1, recipe)
    assert (tmp_path / "cache" / f"digits-8px-1c-{key}.safetensors").is_file()
    lines = read_lines(tmp_path / "run")
    sha256 = eval_metrics.extractor.metadata["sha256"]
    assert {line["extractor"] for line in lines} == {f"digits-8-cnn-{sha256[:8]}"}
    assert {line["extractor_sha256"] for line in lines} == {sha256}
    assert lines[0]["num_real"] == 1797


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, process_groups):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        str(tmp_path),
    ]
    # the timeout is a hang guard only: a loaded 2-core CI machine runs this many times slower
    done = process_groups.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    two = read_lines(tmp_path / "run")
    run_loop(tmp_path / "single")
    one = read_lines(tmp_path / "single")
    assert [line["step"] for line in two] == [line["step"] for line in one]
    for a, b in zip(one, two, strict=True):
        for key in ("fd", "kid", "kid_std"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
        assert (b["num_samples"], b["num_real"], b["is_best"]) == (
            a["num_samples"],
            a["num_real"],
            a["is_best"],
        )
    report = json.loads((tmp_path / "feature_metrics.json").read_text())
    assert report["ok"], report


def distributed_main(out_dir: Path) -> None:
    """Worker: the loop, then FeatureMetrics on uneven shares (through Accelerate and torch.distributed)."""
    run_loop(out_dir / "run")
    accelerator = Accelerator(cpu=True)
    everything = torch.randn(100, 6, generator=torch.Generator().manual_seed(5))
    mine = everything[:70] if accelerator.process_index == 0 else everything[70:]
    options = dict(metrics=("fd", "kid", "pr"), kid_subsets=3, kid_subset_size=40)
    results = {}
    for name, backend in (("accelerate", accelerator), ("torch.distributed", None)):
        metrics = FeatureMetrics(6, accelerator=backend, **options)
        metrics.update(real=mine + 1, fake=mine)
        results[name] = metrics.compute()
    expected = {
        "fd": frechet_distance_from_features(everything + 1, everything),
        **dict(
            zip(
                ("kid", "kid_std"),
                kernel_inception_distance(everything + 1, everything, subsets=3, subset_size=40),
                strict=True,
            )
        ),
        **dict(zip(("precision", "recall"), precision_recall(everything + 1, everything), strict=True)),
        "num_real": 100,
        "num_fake": 100,
    }
    ok = all(got[k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12) for got in results.values() for k in expected)
    if accelerator.is_main_process:
        (out_dir / "feature_metrics.json").write_text(json.dumps({"ok": ok, "results": results, "expected": expected}))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    distributed_main(Path(sys.argv[1]))
