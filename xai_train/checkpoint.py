"""Atomic, prunable checkpoints around ``accelerator.save_state`` and safe resume.

Layout: ``<directory>/step_<N>/`` holds Accelerate's state (model weights as safetensors, optimizer and
RNG states), ``callbacks.pt`` (see ``CallbackList.register_for_checkpointing``) and ``trainer_state.pt``
(the trainer's own counters, data position, EMA weights). Everything is read back with
``weights_only=True``: loading a checkpoint never executes code from it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

TRAINER_STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint path does not exist or is not a checkpoint."""


class CheckpointManager:
    """Saves ``step_<N>`` folders atomically (temporary folder, then rename) and keeps the last K.

    Args:
        accelerator: the run's Accelerator (every rank calls ``save``; only the main process renames/prunes).
        directory: where the ``step_<N>`` folders go, e.g. ``runs/<name>/checkpoints``.
        keep_last: how many checkpoints to keep (0 keeps all).

    Example:
        >>> import tempfile
        >>> from accelerate import Accelerator
        >>> manager = CheckpointManager(Accelerator(cpu=True), tempfile.mkdtemp(), keep_last=2)
        >>> manager.latest() is None
        True
    """

    def __init__(self, accelerator: Accelerator, directory: str | Path, keep_last: int = 3):
        self.accelerator = accelerator
        self.directory = Path(directory)
        self.keep_last = keep_last

    def checkpoints(self) -> list[Path]:
        """Finished checkpoints, oldest first (temporary folders are ignored)."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, step: int, trainer_state: Mapping[str, Any], name: str | None = None) -> Path:
        """Writes checkpoint ``step_<step>`` (or ``<name>``); call on every rank.

        Args:
            step: the optimizer step the checkpoint holds.
            trainer_state: tensors and plain values (no custom classes) the trainer needs to resume.
            name: a fixed folder name such as "best"; named checkpoints are never pruned and never
                picked by ``resume=auto``.

        Returns:
            The final checkpoint folder.
        """
        accelerator = self.accelerator
        folder = name or f"step_{step}"
        if name is not None and _STEP_DIR.match(name):
            raise ValueError(f"checkpoint name '{name}' looks like a step folder; choose another name")
        final = self.directory / folder
        tmp = self.directory / f".tmp_{folder}"
        if accelerator.is_main_process:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            torch.save(dict(trainer_state), tmp / TRAINER_STATE_FILE)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                # Same step saved twice (e.g. a resumed run): move the old one aside before replacing it.
                old = self.directory / f".old_{folder}"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old)
            else:
                tmp.rename(final)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for old in self.checkpoints()[: -self.keep_last]:
            shutil.rmtree(old)

    def resolve(self, resume: str | Path | None) -> Path | None:
        """Turns the ``resume`` setting into a checkpoint folder.

        Args:
            resume: ``None``/``""`` (start fresh), ``"auto"`` (latest in ``directory``, or fresh if none),
                or a path to a ``step_<N>`` folder.

        Raises:
            CheckpointError: the path does not exist or holds no checkpoint.
        """
        if resume in (None, ""):
            return None
        if str(resume) == "auto":
            return self.latest()
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"resume path '{path}' does not exist; pass a step_<N> folder or resume=auto")
        if not (path / TRAINER_STATE_FILE).is_file():
            raise CheckpointError(
                f"'{path}' is not a checkpoint (no {TRAINER_STATE_FILE}); pass a folder like "
                f"{self.directory / 'step_1000'} or resume=auto"
            )
        return path

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restores Accelerate's state from ``path`` on every rank; returns the trainer state."""
        path = Path(path)
        self.accelerator.load_state(str(path))
        return torch.load(path / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
