"""Config sections every recipe shares: the run, the data, and the sample-quality evaluation."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class EvalConfig:
    """Sample-quality metrics during training (``callbacks.EvalMetrics``), written to metrics.jsonl."""

    enabled: bool = False
    every_n_steps: int = 500  # plus once at the end
    num_samples: int = 2048  # FD on fewer than ~5k samples is biased upward: compare at equal counts
    metrics: tuple[str, ...] = ("fd", "kid")  # fd | kid | pr (precision/recall)
    monitor: str = "fd"  # the metric that picks checkpoints/best
    batch_size: int = 256
