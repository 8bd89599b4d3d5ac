"""Run directories, the Accelerator with TensorBoard tracking, progress bars and step timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from xai_train.config.core import save_config

TRACKER_PROJECT = "xai_train"


def make_accelerator(
    run_dir: str | Path | None,
    *,
    mixed_precision: str = "no",
    grad_accum_steps: int = 1,
    seed: int = 0,
    cpu: bool = False,
    log: bool = True,
) -> Accelerator:
    """Creates the Accelerator of a run: TensorBoard under ``<run_dir>/tensorboard``, seeded RNGs.

    Args:
        run_dir: run directory, or ``None`` for a run that writes nothing.
        mixed_precision: "no", "fp16" or "bf16".
        grad_accum_steps: micro-batches per optimizer step (used by ``accelerator.accumulate``).
        seed: seeds python, numpy and torch on every rank (same seed on all ranks).
        cpu: force the CPU even if a GPU is present.
        log: attach the TensorBoard tracker (main process only writes).

    Example:
        >>> make_accelerator(None, log=False).num_processes
        1
    """
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision '{mixed_precision}' is not one of: no, fp16, bf16")
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    project = None
    if run_dir is not None:
        project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "tensorboard"))
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=grad_accum_steps, sync_with_dataloader=False),
        log_with="tensorboard" if (log and run_dir is not None) else None,
        project_config=project,
        cpu=cpu,
    )
    set_seed(seed)
    return accelerator


def start_run(accelerator: Accelerator, run_dir: str | Path | None, config: Mapping[str, Any] | None) -> None:
    """Creates the run directory, writes ``config.yaml`` and starts the trackers (main process writes)."""
    if run_dir is None:
        return
    run_dir = Path(run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            save_config(config, run_dir / "config.yaml")
    if accelerator.log_with:
        accelerator.init_trackers(TRACKER_PROJECT, config=_flat_hparams(config or {}))
    accelerator.wait_for_everyone()


def _flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # TensorBoard's hparams accept scalars and strings only.
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_hparams(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def progress_bar(accelerator: Accelerator, total: int, initial: int = 0, desc: str = "train") -> tqdm:
    """A tqdm bar shown on the main process only."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not accelerator.is_main_process, dynamic_ncols=True)


class StepTimer:
    """Wall-clock time per step; ``median`` ignores the first ``warmup`` steps.

    Example:
        >>> timer = StepTimer(warmup=0)
        >>> with timer:
        ...     pass
        >>> len(timer.times)
        1
    """

    def __init__(self, warmup: int = 5):
        self.warmup = warmup
        self.times: list[float] = []
        self._start = 0.0
        self.last = 0.0

    def __enter__(self) -> StepTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.last = time.perf_counter() - self._start
        self.times.append(self.last)

    def median(self) -> float:
        kept = self.times[self.warmup :] or self.times
        return statistics.median(kept) if kept else float("nan")
