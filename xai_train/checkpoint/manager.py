"""``CheckpointManager``: crash-safe saving and pruning of ``step_<N>`` folders, and a loud resume."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xai_train.atomic import atomic_write
from xai_train.checkpoint.reading import (
    COMPLETE_FILE,
    STEP_DIR,
    TRAINER_STATE_FILE,
    CheckpointError,
    check_model_file,
    culprit,
    first_line,
    list_checkpoints,
    message,
    read_record,
    read_state_file,
    restore_rng,
    step_folders,
)
from xai_train.distributed import failures_on_any_rank

if TYPE_CHECKING:
    from accelerate import Accelerator

_TMP, _OLD, _PRUNING = ".tmp_", ".old_", ".pruning_"


class CheckpointManager:
    """Saves ``step_<N>`` folders crash-safely, keeps the last K, and loads them back (see module doc).

    Args:
        accelerator: the run's Accelerator (every rank calls ``save``/``load``; only the main process
            renames, prunes and cleans).
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
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0 (0 keeps all), got {keep_last}")
        self.accelerator = accelerator
        self.directory = Path(directory)
        self.keep_last = keep_last

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (see ``list_checkpoints``)."""
        return list_checkpoints(self.directory)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        found = self.checkpoints()
        return found[-1] if found else None

    # --- writing ------------------------------------------------------------------------------------
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
        if name is not None and (STEP_DIR.match(name) or name.startswith(".") or "/" in name):
            raise ValueError(f"checkpoint name '{name}' looks like a step folder or a path; choose a plain name")
        final, tmp = self.directory / folder, self.directory / f"{_TMP}{folder}"
        if accelerator.is_main_process:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        model_classes: list[str] = []

        def record_models(models: list[nn.Module], weights: list, output_dir: str) -> None:
            model_classes.extend(type(accelerator.unwrap_model(m)).__name__ for m in models)

        handle = accelerator.register_save_state_pre_hook(record_models)
        try:
            accelerator.save_state(str(tmp))
        finally:
            handle.remove()
        if accelerator.is_main_process:
            torch.save(dict(trainer_state), tmp / TRAINER_STATE_FILE)
        accelerator.wait_for_everyone()  # every rank's files (random_states_<rank>.pkl) are in place
        if accelerator.is_main_process:
            self._seal(tmp, step, model_classes)
            self._move_into_place(tmp, final)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _seal(self, folder: Path, step: int, model_classes: Sequence[str]) -> None:
        """Flushes every file to disk, then writes the completeness marker (the last file)."""
        sizes = {}
        for file in sorted(folder.iterdir()):
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            sizes[file.name] = file.stat().st_size
        record = {
            "step": step,
            "processes": self.accelerator.num_processes,
            "models": list(model_classes),
            "files": sizes,
        }
        atomic_write(folder / COMPLETE_FILE, json.dumps(record, indent=2))

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        if not final.exists():
            os.replace(tmp, final)
            return
        # Same name saved again (a resumed run, "best"): park the old one under a hidden name first.
        old = final.with_name(f"{_OLD}{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)

    def _prune(self) -> None:
        if self.keep_last > 0:
            for old in step_folders(self.directory)[: -self.keep_last]:
                self._delete(old)
        for leftover in self.directory.glob(f"{_PRUNING}*"):
            shutil.rmtree(leftover)

    def _delete(self, folder: Path) -> None:
        # Hidden first: a kill during rmtree leaves a hidden leftover, never a half-deleted step_<N>.
        doomed = folder.with_name(f"{_PRUNING}{folder.name}")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(folder, doomed)
        shutil.rmtree(doomed)

    def clean_leftovers(self) -> list[str]:
        """Removes what an interrupted save or prune left behind; call on every rank when a run starts.

        ``.tmp_*`` and ``.pruning_*`` folders are deleted. A complete ``.old_<name>`` whose replacement
        never arrived is renamed back to ``<name>``. Checkpoints beyond ``keep_last`` (a kill between a
        save and its prune) are pruned.

        Returns:
            The names of the leftovers handled (main process; empty on the other ranks).
        """
        handled: list[str] = []
        if self.accelerator.is_main_process and self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if not path.is_dir() or not path.name.startswith((_TMP, _OLD, _PRUNING)):
                    continue
                handled.append(path.name)
                original = self.directory / path.name[len(_OLD) :]
                if path.name.startswith(_OLD) and not original.exists() and (path / COMPLETE_FILE).is_file():
                    os.replace(path, original)
                else:
                    shutil.rmtree(path)
            self._prune()
        self.accelerator.wait_for_everyone()
        return handled

    # --- reading ------------------------------------------------------------------------------------
    def resolve(self, resume: str | Path | None) -> Path | None:
        """Turns the ``resume`` setting into a checkpoint folder.

        Args:
            resume: ``None``/``""`` (start fresh), ``"auto"`` (latest in ``directory``, or fresh if none),
                or a path to a checkpoint folder.

        Returns:
            The folder to load, or ``None`` to start fresh.

        Raises:
            CheckpointError: the path does not exist or holds no checkpoint, or ``auto`` finds a newer
                ``step_<N>`` without ``checkpoint.json`` (from an older version or copied by hand).
        """
        if resume in (None, ""):
            return None
        if str(resume) == "auto":
            latest = self.latest()
            unsealed = [p for p in step_folders(self.directory) if not (p / COMPLETE_FILE).is_file()]
            newer = [p for p in unsealed if latest is None or int(p.name[5:]) > int(latest.name[5:])]
            if newer:
                raise CheckpointError(
                    f"resume=auto: '{newer[-1]}' has no {COMPLETE_FILE} (written by an older version, or not "
                    f"by xai_train); resume from it explicitly with resume={newer[-1]}, or delete it"
                )
            return latest
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
        """Restores Accelerate's state (models, optimizers, RNGs, callbacks) from ``path``; call on every rank.

        Checks what it can before touching any state (file sizes against ``checkpoint.json``, the
        trainer and RNG states, each model's tensor names and shapes), then loads, then restores this
        rank's RNG states itself (Accelerate only logs a failure to).

        Args:
            path: a checkpoint folder.

        Returns:
            The trainer state saved with it.

        Raises:
            CheckpointError: on every rank, if any rank could not load (the message names the folder,
                the file and the cause).
        """
        path = Path(path)
        state, failure, unexpected = None, None, None
        try:
            state = self._load_here(path)
        except CheckpointError as error:
            failure = str(error)
        except Exception as error:  # a bug: this rank keeps its traceback, the others still stop
            failure, unexpected = f"loading {path} failed with {type(error).__name__}: {first_line(error)}", error
        failures = failures_on_any_rank(self.accelerator, failure)
        if unexpected is not None:
            raise unexpected
        if failures:
            raise CheckpointError(failures[0] if len(failures) == 1 else " | ".join(failures))
        return state

    def _load_here(self, folder: Path) -> dict[str, Any]:
        accelerator = self.accelerator
        if not folder.is_dir():
            raise CheckpointError(message(folder, "the folder does not exist"))
        record = read_record(folder)
        trainer_state = read_state_file(folder / TRAINER_STATE_FILE)
        rng_file = folder / f"random_states_{accelerator.process_index}.pkl"
        if not rng_file.is_file() and record.get("processes", accelerator.num_processes) != accelerator.num_processes:
            cause = (
                f"{rng_file.name} is missing: the checkpoint was saved by {record['processes']} processes, this "
                f"run has {accelerator.num_processes}"
            )
            raise CheckpointError(message(folder, cause, f"resume with {record['processes']} processes"))
        rng_states = read_state_file(rng_file)
        if not isinstance(rng_states, Mapping) or not {"random_state", "numpy_random_seed", "torch_manual_seed"} <= set(
            rng_states
        ):
            raise CheckpointError(message(folder, f"{rng_file.name} does not hold Accelerate's RNG states"))

        def check_models(models: list[nn.Module], input_dir: str) -> None:
            for index, model in enumerate(models):
                check_model_file(folder, index, accelerator.unwrap_model(model), record.get("models", []))

        handle = accelerator.register_load_state_pre_hook(check_models)
        try:
            accelerator.load_state(str(folder))
        except CheckpointError:
            raise
        except Exception as error:
            raise culprit(folder) or CheckpointError(
                message(folder, f"loading failed ({first_line(error)})")
            ) from error
        finally:
            handle.remove()
        try:
            restore_rng(rng_states)
        except Exception as error:
            raise CheckpointError(
                message(folder, f"{rng_file.name} holds unusable RNG states ({first_line(error)})")
            ) from None
        return trainer_state
