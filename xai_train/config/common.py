"""Config sections every recipe shares: the run, the data, and the sample-quality evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunConfig:
    name: str = "dcgan_digits"  # run folder: <output_dir>/<name>
    output_dir: str = "runs"
    seed: int = 0  # seeds data order, latent noise, init and dropout on every rank
    resume: str = ""  # "" = fresh, "auto" = latest checkpoint of this run, or a step_<N> folder
    cpu: bool = False  # force the CPU even where a GPU is visible


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits | shapes | mnist | fashion_mnist | cifar10 | folder
    root: str = ""  # local files for mnist / fashion_mnist / cifar10 / folder (nothing is downloaded)
    image_size: int = 32
    channels: int = 1
    num_samples: int = 0  # 0 = the whole dataset (shapes: 10,000 images)
    fraction: float = 1.0  # keep a seeded random subset (the paper's "20% of the data" claim)

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

    def callback_kwargs(self, data: DataConfig, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``callbacks.EvalMetrics``: the real set is the whole dataset, also when
        ``data.fraction < 1``."""
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
