"""``EvalMetrics``: periodic FD / KID (/ precision-recall) of generated samples, for GAN and diffusion runs.

Every ``every_n_steps`` steps, at ``max_steps`` and at the end of training, the callback draws a fixed set of
``num_samples`` samples (the same latents / seeds each time), computes the metrics against the real set
through a named feature extractor, logs them as ``eval/<metric>_<extractor>``, appends a line to
``run_dir/metrics.jsonl`` and rewrites ``run_dir/best.json`` when the monitored metric improves.

Sampling: a GAN generator is taken from ``state.models["generator"]`` (unwrapped, eval mode, fixed latents
from ``sample_latent``) with the EMA weights of ``state.ema["generator"]`` when the trainer keeps one
(``ema_decay > 0``; the sample grids use the same weights); anything else (diffusion) passes
``sample_fn(n, generator)`` returning (n, C, H, W) in [-1, 1], drawing its noise from the given CPU
``torch.Generator``. Samples are cut into batches of ``batch_size``, batch ``b`` seeded by ``(seed, b)``; each
rank runs a contiguous run of batches, so the sample set (and its order) is the same for any number of
processes. Real features are computed once, each rank its contiguous share, and kept.

Keeping the best checkpoint: on an improvement the callback calls ``state.request_checkpoint("best")`` (the
decision is the same on every rank); the trainers then save ``checkpoints/best``. A hand-written loop can do
the same with ``best_step``, the same on every rank, right after ``on_step_end``::

    callbacks.on_step_end(state, logs)
    if eval_metrics.best_step == state.step:
        accelerator.save_state(run_dir / "checkpoints" / "best")

The real (reference) set: a dataset with a held-out split (``mnist5k``: 1,000 images no run trains on) is
compared against that split; the others against their whole training set (``digits``, ``shapes``: FD then
measures closeness to the very images the GAN and the extractor trained on). Every ``metrics.jsonl`` line
names it (``reference``, beside ``num_real``).

Honest numbers: FD on fewer than ~5k samples (generated or real: digits has only 1,797) is biased upward,
so compare FDs only at equal ``num_samples`` and real set; KID, unbiased, is logged beside it.
``metrics.jsonl`` may hold lines past the last checkpoint after a resume: keep the last line per step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast
from torch import Tensor

from xai_train import Callback, TrainState
from xai_train.atomic import append_line, atomic_write
from xai_train.config.common import EvalConfig
from xai_train.ema import ema_weights
from xai_train.metrics import (
    METRICS,
    ClassifierRecipe,
    FeatureExtractor,
    GenerativeMetrics,
    domain_feature_extractor,
    tagged_scalars,
)

SampleFn = Callable[[int, torch.Generator], Tensor]
"""``sample_fn(n, generator) -> (n, C, H, W)`` images in [-1, 1], noise drawn from the CPU ``generator``."""

HIGHER_IS_BETTER = ("precision", "recall")
DEFAULTS = EvalConfig()  # one source of truth: the recipes' ``eval`` section and this callback agree


def _share(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """[first, stop) of rank ``rank``'s contiguous share of ``count`` items (sizes differ by at most one)."""
    return rank * count // world_size, (rank + 1) * count // world_size


class EvalMetrics(Callback):
    """Periodic sample-quality metrics with best-step tracking (defaults: ``xai_train.config.common.EvalConfig``).

    Args:
        dataset: a dataset name (``"digits"``, ``"shapes"``, ...): the default real set and the default
            extractor (its cached feature classifier, trained on first use).
        real_images: (N, C, H, W) reference images in [-1, 1]; default: the ``dataset``'s evaluation split
            (``xai_train.data.evaluation_split``: held out for ``mnist5k``, the whole dataset otherwise).
        extractor: the feature extractor; default: ``domain_feature_extractor(dataset, ...)``.
        image_size: image size used to build ``dataset`` (when ``real_images`` is not given).
        channels: channels used to build ``dataset`` (when ``real_images`` is not given).
        every_n_steps: evaluation period in steps (0: only at ``max_steps`` and at the end).
        num_samples: generated samples per evaluation (FD is biased below ~5k; compare at equal counts).
        metrics: any of ``"fd"``, ``"kid"``, ``"pr"``.
        monitor: the metric that defines "best" (lower is better, except precision/recall).
        sample_fn: ``sample_fn(n, generator)``; default: the GAN generator in ``state.models["generator"]``
            (with the EMA weights of ``state.ema["generator"]`` if there are any).
        batch_size: samples per generation / feature batch.
        seed: seeds the fixed latents / sampling noise and the KID subsets.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (clipped to the smaller set).
        root: dataset folder for datasets loaded from files.
        cache_dir: feature-classifier cache (default ``$XAI_TRAIN_CACHE/classifiers`` or ``~/.cache/...``).
        recipe: training recipe of the default extractor (default ``ClassifierRecipe()``).

    Example:
        >>> callback = EvalMetrics(dataset="digits", image_size=32, every_n_steps=500, num_samples=2000)
        >>> callback.best_step is None
        True
    """

    state_key = "eval_metrics"

    def __init__(
        self,
        dataset: str | None = None,
        *,
        real_images: Tensor | None = None,
        extractor: FeatureExtractor | None = None,
        image_size: int = 32,
        channels: int = 1,
        every_n_steps: int = DEFAULTS.every_n_steps,
        num_samples: int = DEFAULTS.num_samples,
        metrics: Iterable[str] = DEFAULTS.metrics,
        monitor: str = DEFAULTS.monitor,
        sample_fn: SampleFn | None = None,
        batch_size: int = DEFAULTS.batch_size,
        seed: int = 0,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        root: str | Path | None = None,
        cache_dir: str | Path | None = None,
        recipe: ClassifierRecipe | None = None,
    ):
        if dataset is None and (real_images is None or extractor is None):
            raise ValueError("EvalMetrics needs `dataset`, or both `real_images` and `extractor`")
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"EvalMetrics: unknown metrics {unknown}; choose from: {', '.join(METRICS)}")
        produced = {"fd": ["fd"], "kid": ["kid"], "pr": ["precision", "recall"]}
        monitors = [name for m in self.metrics for name in produced[m]]
        if monitor not in monitors:
            raise ValueError(
                f"EvalMetrics: monitor {monitor!r} is not computed; with metrics {self.metrics} "
                f"choose one of {monitors}"
            )
        if num_samples < 2 or batch_size < 1 or every_n_steps < 0:
            raise ValueError(
                "EvalMetrics: need num_samples >= 2, batch_size >= 1 and every_n_steps >= 0; "
                f"got {num_samples}, {batch_size} and {every_n_steps}"
            )
        self.dataset, self.real_images, self.extractor = dataset, real_images, extractor
        self.image_size, self.channels = image_size, channels
        self.root, self.cache_dir, self.recipe = root, cache_dir, recipe
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.batch_size, self.seed = batch_size, seed
        self.monitor, self.sample_fn = monitor, sample_fn
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.reference = "given" if real_images is not None else None
        self.evaluator: GenerativeMetrics | None = None
        self._real_added = False
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.best_metrics: dict[str, Any] = {}
        self.last_step: int | None = None
        self.last_metrics: dict[str, Any] = {}

    # --- hooks ---------------------------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        self._setup(state)

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        periodic = self.every_n_steps > 0 and state.step % self.every_n_steps == 0
        if periodic or (state.max_steps > 0 and state.step == state.max_steps):
            self.evaluate(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.last_step != state.step:
            self.evaluate(state)

    # --- the work ------------------------------------------------------------------------------------
    def _setup(self, state: TrainState) -> None:
        """Builds the real set and the extractor (the main process trains a missing classifier first)."""
        if self.evaluator is not None:
            return
        acc = state.accelerator
        if self.real_images is None:
            from xai_train.data import build_dataset, evaluation_split

            split = evaluation_split(self.dataset)
            data = build_dataset(
                self.dataset, root=self.root, image_size=self.image_size, channels=self.channels, split=split
            )
            self.real_images, self.reference = data.images, f"{self.dataset}/{split}"
        if self.extractor is None:
            _, channels, size, _ = self.real_images.shape
            with acc.main_process_first():
                self.extractor = domain_feature_extractor(
                    self.dataset,
                    image_size=size,
                    channels=channels,
                    root=self.root,
                    recipe=self.recipe,
                    cache_dir=self.cache_dir,
                )
        self.evaluator = GenerativeMetrics(
            self.extractor,
            metrics=self.metrics,
            accelerator=acc,
            batch_size=self.batch_size,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            seed=self.seed,
        )

    def _my_batches(self, state: TrainState) -> list[tuple[int, int]]:
        """(start, size) of the sample batches this rank generates: a contiguous run of the global batches.

        Contiguous runs keep the gathered features in global order, so results do not depend on the
        number of processes (up to floating-point summation order).
        """
        acc = state.accelerator
        count = math.ceil(self.num_samples / self.batch_size)
        first, stop = _share(count, acc.process_index, acc.num_processes)
        starts = range(first * self.batch_size, stop * self.batch_size, self.batch_size)
        return [(start, min(self.batch_size, self.num_samples - start)) for start in starts]

    @torch.no_grad()
    def _generate(self, state: TrainState, start: int, size: int) -> Tensor:
        noise = torch.Generator().manual_seed(self.seed * 1_000_003 + start // self.batch_size)
        if self.sample_fn is not None:
            return self.sample_fn(size, noise)
        if "generator" not in state.models:
            raise KeyError("EvalMetrics: no sample_fn given and state.models has no 'generator'")
        model = state.accelerator.unwrap_model(state.models["generator"])
        if hasattr(model, "sample_latent"):
            latents = model.sample_latent(size, generator=noise, device="cpu")
        elif hasattr(model, "latent_dim"):
            latents = torch.randn(size, model.latent_dim, generator=noise)
        else:
            raise TypeError(
                f"EvalMetrics: the generator {type(model).__name__} has neither `sample_latent` nor `latent_dim`; "
                "give it one, or pass sample_fn(n, generator) -> images"
            )
        with ema_weights(model, state.ema.get("generator")) as model:
            return model(latents.to(state.accelerator.device)).float()

    def evaluate(self, state: TrainState) -> dict[str, Any]:
        """Samples, computes and records the metrics at ``state.step``. A collective: call on every rank.

        Returns:
            The record written to ``metrics.jsonl`` (identical on every rank).
        """
        self._setup(state)
        acc, evaluator = state.accelerator, self.evaluator
        start_time = time.perf_counter()
        if not self._real_added:
            first, stop = _share(len(self.real_images), acc.process_index, acc.num_processes)
            for chunk in self.real_images[first:stop].split(self.batch_size):
                evaluator.update(real=chunk)
            self._real_added = True
        evaluator.reset(real=False)
        with evaluator.fixed_threads():  # CPU: one thread, so the samples do not depend on --threads either
            for start, size in self._my_batches(state):
                evaluator.update(fake=self._generate(state, start, size))
        results = self._agree(state, evaluator.compute())
        value = float(results[self.monitor])
        lower_is_better = self.monitor not in HIGHER_IS_BETTER
        improved = math.isfinite(value) and (
            self.best_value is None or (value < self.best_value if lower_is_better else value > self.best_value)
        )
        record = {
            "step": state.step,
            **results,
            "extractor_sha256": self.extractor_sha256,
            "reference": self.reference,
            "num_samples": results["num_fake"],
            "is_best": improved,
            "eval_time_s": time.perf_counter() - start_time,
        }
        if improved:
            self.best_step, self.best_value, self.best_metrics = state.step, value, dict(record)
            state.request_checkpoint("best")
        self.last_step, self.last_metrics = state.step, record
        state.log_scalars({**tagged_scalars(results), "eval/time_s": record["eval_time_s"]}, step=state.step)
        if state.is_main_process and state.run_dir is not None:
            self._write(Path(state.run_dir), record, improved)
        return record

    def _agree(self, state: TrainState, results: dict[str, Any]) -> dict[str, Any]:
        """Makes every rank hold rank 0's numbers (guards the best-step decision against round-off)."""
        acc = state.accelerator
        if acc.num_processes == 1:
            return results
        keys = sorted(k for k, v in results.items() if isinstance(v, (int, float)))
        values = broadcast(torch.tensor([float(results[k]) for k in keys], dtype=torch.float64, device=acc.device))
        agreed = dict(results)
        for key, value in zip(keys, values.tolist(), strict=True):
            agreed[key] = int(value) if isinstance(results[key], int) else value
        return agreed

    def _write(self, run_dir: Path, record: Mapping[str, Any], improved: bool) -> None:
        append_line(run_dir / "metrics.jsonl", json.dumps(record))  # whole records only, even after a kill
        if improved:
            best = {
                "step": self.best_step,
                "monitor": self.monitor,
                "value": self.best_value,
                "metrics": record,
            }
            atomic_write(run_dir / "best.json", json.dumps(best, indent=2))

    @property
    def extractor_sha256(self) -> str | None:
        """SHA-256 of the extractor's weights (``None`` for an extractor without one, e.g. a user's module)."""
        return getattr(self.extractor, "metadata", {}).get("sha256")

    def fingerprint(self) -> dict[str, Any]:
        """The extractor, for the run's environment fingerprint (its name carries its weights' hash)."""
        if self.extractor is None:
            return {}
        return {
            "extractor": self.extractor.name,
            "extractor_sha256": self.extractor_sha256,
            "eval_reference": f"{self.reference} ({len(self.real_images)} images)",
        }

    # --- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_value": self.best_value,
            "best_metrics": dict(self.best_metrics),
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_step, self.best_value = state["best_step"], state["best_value"]
        self.best_metrics, self.last_step = dict(state["best_metrics"]), state["last_step"]
