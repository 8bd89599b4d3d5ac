"""The training loop both trainers share: steps, logging, samples, checkpoints, resume, summary.

A trainer subclasses ``TrainingLoop`` and provides ``train_step``, ``step_scalars``, ``sample_and_log``
and ``trainer_state``/``load_trainer_state``; the loop owns everything around them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import Tensor

from xai_train.atomic import atomic_write
from xai_train.callback import CallbackList, TrainState
from xai_train.checkpoint import CheckpointManager
from xai_train.data import TensorBatches
from xai_train.distributed import failures_on_any_rank, synchronize
from xai_train.errors import NonFiniteTrainingError
from xai_train.fingerprint import environment_fingerprint
from xai_train.tracking import StepTimer, progress_bar

SUMMARY_FILE = "summary.json"


class TrainingLoop:
    """Base class of the trainers. Subclasses set the attributes below in ``__init__``.

    Attributes:
        config: has ``max_steps``, ``log_every``, ``sample_every``, ``checkpoint_every``.
        accelerator, state, callbacks, checkpoints, batches, timer, run_dir, resume, seed.
    """

    config: Any
    accelerator: Accelerator
    state: TrainState
    callbacks: CallbackList
    checkpoints: CheckpointManager
    batches: TensorBatches
    timer: StepTimer
    run_dir: Path | None
    resume: str
    seed: int
    _seconds_before: float = 0.0  # training time of the runs this one resumed from
    _started: float = 0.0

    # --- what a trainer provides --------------------------------------------------------------------
    def train_step(self) -> dict[str, Tensor]:
        """One optimizer step; returns detached statistics."""
        raise NotImplementedError

    def step_scalars(self, stats: Mapping[str, Tensor]) -> dict[str, float]:
        """The scalars logged on logging steps (calls ``.item()``: only every ``log_every`` steps)."""
        raise NotImplementedError

    def progress_postfix(self, logs: Mapping[str, float]) -> dict[str, str]:
        """What the progress bar shows next to the speed."""
        return {}

    def sample_and_log(self, final: bool = False) -> None:
        """Periodic samples (and, when ``final``, the PNGs of the run directory)."""

    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond Accelerate's state (tensors and plain values only)."""
        raise NotImplementedError

    def load_trainer_state(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the final checkpoint, before ``on_train_end`` (e.g. export a pipeline)."""

    # --- shared machinery ---------------------------------------------------------------------------
    def _start_clock(self, seconds_before: float = 0.0) -> None:
        self._seconds_before = seconds_before
        self._started = time.perf_counter()

    def train_seconds(self) -> float:
        """Wall-clock seconds spent training this run so far, across resumes."""
        return self._seconds_before + time.perf_counter() - self._started

    def full_trainer_state(self) -> dict[str, Any]:
        return {
            **self.trainer_state(),
            "step": self.state.step,
            "train_seconds": self.train_seconds(),
            "fingerprints": self._segment_fingerprints(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """This process's environment fingerprint, with the callbacks' entries (e.g. the extractor)."""
        return {**environment_fingerprint(self.accelerator, seed=self.seed), **self.callbacks.fingerprint()}

    def _segment_fingerprints(self) -> list[dict[str, Any]]:
        """One fingerprint per process that trained this run so far (a resume adds one), this one last."""
        earlier = getattr(self, "_earlier_fingerprints", [])
        current = getattr(self, "_fingerprint", None)
        return [*earlier, *([current] if current is not None else [])]

    def save_checkpoint(self, name: str | None = None) -> Path:
        return self.checkpoints.save(self.state.step, self.full_trainer_state(), name=name)

    def _save_requested_checkpoints(self) -> None:
        """Saves what callbacks asked for with ``state.request_checkpoint`` (e.g. "best")."""
        requests, self.state.checkpoint_requests = self.state.checkpoint_requests, []
        if self.run_dir is not None:
            for name in requests:
                self.save_checkpoint(name)

    def _check_finite(self, logs: Mapping[str, float]) -> None:
        """Raises on every rank alike if any rank logged a NaN/inf (a collective: call it on every rank)."""
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        failures = failures_on_any_rank(self.accelerator, str(bad) if bad else None)
        if failures:
            latest = self.checkpoints.latest() if self.run_dir is not None else None
            raise NonFiniteTrainingError(
                f"non-finite training values at step {self.state.step}: {'; '.join(failures)}; last good checkpoint: "
                f"{latest}. Lower the learning rates, enable gradient clipping, or use mixed_precision=no."
            )

    def _resume(self) -> None:
        if self.run_dir is not None:
            self.checkpoints.clean_leftovers()
        checkpoint = self.checkpoints.resolve(self.resume)
        self._start_clock()
        if checkpoint is not None:
            state = self.checkpoints.load(checkpoint)
            self.load_trainer_state(state)
            self._earlier_fingerprints = list(state.get("fingerprints", []))
            self.state.step = int(state["step"])
            self.state.epoch = self.batches.epoch
            self._start_clock(float(state.get("train_seconds", 0.0)))
            self.accelerator.print(f"resumed from {checkpoint} at step {self.state.step}")
            if self.state.step >= self.config.max_steps:
                self.accelerator.print(
                    f"nothing to train: the checkpoint is at step {self.state.step}, train.max_steps="
                    f"{self.config.max_steps}; raise train.max_steps to train further"
                )

    def train(self) -> dict[str, Any]:
        """Runs until ``max_steps`` (or a callback's stop request). Returns a summary.

        Returns:
            ``steps``, ``max_steps``, ``median_step_time``, ``train_seconds`` (across resumes), ``processes``,
            ``run_dir``, the last logged scalars, ``fingerprint`` (:func:`xai_train.fingerprint.
            environment_fingerprint` plus the callbacks' ``fingerprint()``: versions, device, CPU, threads,
            seed, extractor) and ``earlier_fingerprints`` (those of the processes this run resumed from, kept
            in the checkpoints: a run resumed elsewhere shows it); also written to ``<run_dir>/summary.json``.
        """
        cfg, acc, state = self.config, self.accelerator, self.state
        self._resume()
        self.callbacks.on_train_start(state)
        self._fingerprint = self.fingerprint()  # after on_train_start: callbacks have built their extractors
        bar = progress_bar(acc, cfg.max_steps, initial=state.step)
        last_logs: dict[str, float] = {}
        try:  # an error (a NaN loss, a user error) prints below a closed progress bar
            while state.step < cfg.max_steps:
                synchronize(acc.device)  # on CUDA: time the step's kernels, not their launches
                with self.timer:
                    stats = self.train_step()
                    synchronize(acc.device)
                state.step += 1
                state.epoch = self.batches.epoch
                logs = {"step_time": self.timer.last}
                if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                    logs.update(self.step_scalars(stats))
                    self._check_finite(logs)
                    state.log_scalars(logs)
                    bar.set_postfix(self.progress_postfix(logs), refresh=False)
                    last_logs = logs
                self.callbacks.on_step_end(state, logs)
                self._save_requested_checkpoints()
                bar.update(1)
                if cfg.sample_every > 0 and state.step % cfg.sample_every == 0:
                    self.sample_and_log()
                if cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0 and self.run_dir is not None:
                    self.save_checkpoint()
                if state.should_stop():
                    break
        finally:
            bar.close()
        if self.run_dir is not None:
            self.sample_and_log(final=True)
            if (self.checkpoints.latest() or Path()).name != f"step_{state.step}":
                self.save_checkpoint()
        self.finish()
        self.callbacks.on_train_end(state)
        self._save_requested_checkpoints()
        acc.end_training()
        summary = {
            "steps": state.step,
            "max_steps": cfg.max_steps,
            "median_step_time": self.timer.median(),
            "train_seconds": self.train_seconds(),
            "processes": acc.num_processes,
            **last_logs,
            "fingerprint": self.fingerprint(),
            "earlier_fingerprints": self._segment_fingerprints()[:-1],  # of the processes this run resumed from
        }
        if self.run_dir is not None and acc.is_main_process:
            atomic_write(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        return {**summary, "run_dir": self.run_dir}
