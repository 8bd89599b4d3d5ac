"""Config sections every recipe shares: the run, the data, and the sample-quality evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xai_train.config.core import ConfigError, check_choices, check_fields
from xai_train.data.build import DATASET_NAMES, ROOT_CONTENTS

EVAL_OUTPUTS: dict[str, tuple[str, ...]] = {"fd": ("fd",), "kid": ("kid",), "pr": ("precision", "recall")}
"""What each ``eval.metrics`` entry computes (the names ``eval.monitor`` can pick)."""


def at_least(low: float) -> Any:
    """A test for :func:`check_fields`: a finite number >= ``low`` (NaN fails)."""
    return lambda v: v >= low and math.isfinite(v)


def positive(v: float) -> bool:
    """A finite number > 0."""
    return v > 0 and math.isfinite(v)


def unit_interval(v: float) -> bool:
    """A number in [0, 1]."""
    return 0 <= v <= 1


def half_open_unit(v: float) -> bool:
    """A number in [0, 1): a decay, a beta or a dropout probability."""
    return 0 <= v < 1


def check_betas(config: Any, name: str = "betas") -> None:
    """Adam's (beta1, beta2), each in [0, 1)."""
    betas = getattr(config, name)
    if not all(half_open_unit(b) for b in betas):
        raise ConfigError(f"{name}={list(betas)!r}: Adam's betas must each be in [0, 1), e.g. [0.5, 0.999]")


@dataclass(frozen=True)
class RunConfig:
    name: str = "dcgan_digits"  # run folder: <output_dir>/<name>
    output_dir: str = "runs"
    seed: int = 0  # seeds data order, latent noise, init and dropout on every rank
    resume: str = ""  # "" = fresh, "auto" = latest checkpoint of this run, or a step_<N> folder
    cpu: bool = False  # force the CPU even where a GPU is visible

    def __post_init__(self) -> None:
        check_fields(self, "must not be empty (the run folder is <output_dir>/<name>)", bool, "name")
        check_fields(
            self,
            "must be one folder name, without '/', '\\' or '..' (put the parent folders in run.output_dir)",
            lambda v: "/" not in v and "\\" not in v and v not in (".", ".."),
            "name",
        )
        check_fields(self, "must be >= 0", lambda v: v >= 0, "seed")


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits (8x8, upsampled) | mnist5k (real MNIST, embedded) | shapes | mnist | ... | folder
    root: str = ""  # local files for mnist / fashion_mnist / cifar10 / folder (nothing is downloaded)
    image_size: int = 32
    channels: int = 1
    num_samples: int = 0  # 0 = the whole training set (shapes: 10,000 images; mnist5k: its 4,000 train split)
    fraction: float = 1.0  # keep a seeded random subset (the paper's "20% of the data" claim)

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 1 (pixels)", lambda v: v >= 1, "image_size")
        check_fields(self, "must be 1 (grey) or 3 (RGB)", lambda v: v in (1, 3), "channels")
        check_fields(self, "must be >= 0 (0 = the whole dataset)", lambda v: v >= 0, "num_samples")
        check_fields(self, "must be in (0, 1] (the share of the data kept)", lambda v: 0 < v <= 1, "fraction")
        check_fields(
            self, f"unknown dataset; choose one of: {', '.join(DATASET_NAMES)}", DATASET_NAMES.__contains__, "name"
        )
        if self.name in ROOT_CONTENTS and not self.root:
            raise ConfigError(
                f"root='': dataset {self.name!r} reads local files; set data.root=<folder with "
                f"{ROOT_CONTENTS[self.name]}>"
            )
        if self.name not in ROOT_CONTENTS and self.root:
            raise ConfigError(f"root={self.root!r}: dataset {self.name!r} is built in and takes no root; remove it")

    def dataset_kwargs(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``xai_train.data.build_dataset`` for this section."""
        return dict(
            name=self.name,
            root=self.root or None,
            image_size=self.image_size,
            channels=self.channels,
            num_samples=self.num_samples or None,
            seed=seed,
            fraction=self.fraction,
        )


@dataclass(frozen=True)
class EvalConfig:
    """Sample-quality metrics during training (``callbacks.EvalMetrics``), written to metrics.jsonl."""

    enabled: bool = False
    every_n_steps: int = 500  # plus once at the end
    num_samples: int = 2048  # FD on fewer than ~5k samples is biased upward: compare at equal counts
    metrics: tuple[str, ...] = ("fd", "kid")  # fd | kid | pr (precision/recall)
    monitor: str = "fd"  # the metric that picks checkpoints/best
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 0 (0 = only at the end)", lambda v: v >= 0, "every_n_steps")
        check_fields(self, "must be >= 2 (a covariance needs two samples)", lambda v: v >= 2, "num_samples")
        check_fields(self, "must be >= 1", lambda v: v >= 1, "batch_size")
        unknown = [m for m in self.metrics if m not in EVAL_OUTPUTS]
        if unknown or not self.metrics:
            problem = "unknown " + ", ".join(map(repr, unknown)) if unknown else "empty"
            raise ConfigError(f"metrics={list(self.metrics)!r}: {problem}; choose from: {', '.join(EVAL_OUTPUTS)}")
        monitors = [name for m in self.metrics for name in EVAL_OUTPUTS[m]]
        if self.monitor not in monitors:
            raise ConfigError(
                f"monitor={self.monitor!r}: not computed by metrics {list(self.metrics)}; choose one of {monitors}"
            )
        check_choices(self)

    def callback_kwargs(self, data: DataConfig, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``callbacks.EvalMetrics``: the real set is the dataset's evaluation split (the
        held-out 1,000 for ``mnist5k``; the whole dataset otherwise), also when ``data.fraction < 1``."""
        return dict(
            dataset=data.name,
            root=data.root or None,
            image_size=data.image_size,
            channels=data.channels,
            every_n_steps=self.every_n_steps,
            num_samples=self.num_samples,
            metrics=self.metrics,
            monitor=self.monitor,
            batch_size=self.batch_size,
            seed=seed,
        )
