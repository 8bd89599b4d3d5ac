"""Crash-safe, prunable checkpoints around ``accelerator.save_state``, and a resume that fails loudly.

Layout: ``<directory>/step_<N>/`` holds Accelerate's state (model weights as safetensors, optimizer and
RNG states), ``callbacks.pt`` (see ``CallbackList.register_for_checkpointing``), ``trainer_state.pt``
(the trainer's own counters, data position, EMA weights) and, written last, ``checkpoint.json`` (the
step, the model classes and every file's size). Only folders with ``checkpoint.json`` are checkpoints.

Crash safety: a checkpoint is written into a hidden ``.tmp_<name>`` folder and renamed into place;
pruning renames ``step_<N>`` to a hidden ``.pruning_step_<N>`` before deleting it. A SIGKILL at any
moment therefore leaves only complete checkpoints under their listed names, plus hidden leftovers that
``clean_leftovers`` removes when the next run starts.

Loading reads everything with ``weights_only=True`` (safetensors for weights): it never executes code
from a checkpoint. Every way a load can fail ends in one ``CheckpointError`` naming the folder, the
cause and the fix, raised on every rank alike.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from xai_train.atomic import atomic_write
from xai_train.distributed import failures_on_any_rank
from xai_train.errors import UserError

if TYPE_CHECKING:
    from accelerate import Accelerator

TRAINER_STATE_FILE = "trainer_state.pt"
COMPLETE_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP, _OLD, _PRUNING = ".tmp_", ".old_", ".pruning_"
# The globals numpy arrays and dtypes need to unpickle (Accelerate's RNG states hold numpy's state).
_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(UserError):
    """A checkpoint cannot be used: the message names the folder, the cause and the fix.

    Example:
        >>> isinstance(CheckpointError("x"), ValueError)
        True
    """


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The complete ``step_<N>`` checkpoints in ``directory``, oldest first.

    A folder counts once its ``checkpoint.json`` (written last) exists; hidden temporary folders and
    folders without it are ignored.

    Args:
        directory: a run's ``checkpoints`` folder.

    Returns:
        The checkpoint folders sorted by step (empty if ``directory`` does not exist).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("step_10", "step_9", ".tmp_step_11", "step_12"):
        ...     (folder / name).mkdir()
        >>> for name in ("step_10", "step_9", ".tmp_step_11"):
        ...     _ = (folder / name / COMPLETE_FILE).write_text("{}")
        >>> [p.name for p in list_checkpoints(folder)]
        ['step_9', 'step_10']
    """
    return [p for p in _step_folders(directory) if (p / COMPLETE_FILE).is_file()]


def _step_folders(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_state_file(path: str | Path) -> Any:
    """Reads a ``.pt``/``.bin``/``.pkl`` file of a checkpoint with ``weights_only=True``.

    Tensors, plain Python values and numpy arrays (Accelerate's RNG states) load; anything else is
    refused without running it.

    Args:
        path: the file.

    Returns:
        The stored object.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or holds objects that would run code.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "state.pt"
        >>> torch.save({"step": 3, "rng": np.random.get_state()}, path)
        >>> read_state_file(path)["step"]
        3
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(_message(path.parent, f"{path.name} is missing")) from None
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error).lower() or "unsupported global" in str(error).lower():
            cause = (
                f"{path.name} holds objects other than tensors and plain values; they were refused unread "
                "(loading never runs code from a checkpoint)"
            )
            raise CheckpointError(
                _message(path.parent, cause, "only resume from checkpoints xai_train wrote")
            ) from None
        raise CheckpointError(_message(path.parent, f"{path.name} is corrupt ({_first_line(error)})")) from None
    except Exception as error:  # truncated zip archives raise RuntimeError/EOFError/OSError, depending on where
        raise CheckpointError(
            _message(path.parent, f"{path.name} is truncated or corrupt ({_first_line(error)})")
        ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0].split(". ")[0] if lines else type(error).__name__)[:200]


def _message(folder: Path, cause: str, fix: str | None = None) -> str:
    if fix is None:
        earlier = [p.name for p in list_checkpoints(folder.parent) if p != folder]
        fix = "resume from another checkpoint" + (f" (found: {', '.join(earlier)})" if earlier else "")
        fix += " or start a fresh run"
    return f"cannot resume from {folder}: {cause}; {fix}"


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
        if name is not None and (_STEP_DIR.match(name) or name.startswith(".") or "/" in name):
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
            for old in _step_folders(self.directory)[: -self.keep_last]:
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
            unsealed = [p for p in _step_folders(self.directory) if not (p / COMPLETE_FILE).is_file()]
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
        state, failure = None, None
        try:
            state = self._load_here(path)
        except CheckpointError as error:
            failure = str(error)
        failures = failures_on_any_rank(self.accelerator, failure)
        if failures:
            raise CheckpointError(failures[0] if len(failures) == 1 else " | ".join(failures))
        return state

    def _load_here(self, folder: Path) -> dict[str, Any]:
        accelerator = self.accelerator
        if not folder.is_dir():
            raise CheckpointError(_message(folder, "the folder does not exist"))
        record = self._read_record(folder)
        trainer_state = read_state_file(folder / TRAINER_STATE_FILE)
        rng_file = folder / f"random_states_{accelerator.process_index}.pkl"
        if not rng_file.is_file() and record.get("processes", accelerator.num_processes) != accelerator.num_processes:
            cause = (
                f"{rng_file.name} is missing: the checkpoint was saved by {record['processes']} processes, this "
                f"run has {accelerator.num_processes}"
            )
            raise CheckpointError(_message(folder, cause, f"resume with {record['processes']} processes"))
        rng_states = read_state_file(rng_file)
        if not isinstance(rng_states, Mapping) or not {"random_state", "numpy_random_seed", "torch_manual_seed"} <= set(
            rng_states
        ):
            raise CheckpointError(_message(folder, f"{rng_file.name} does not hold Accelerate's RNG states"))

        def check_models(models: list[nn.Module], input_dir: str) -> None:
            for index, model in enumerate(models):
                _check_model_file(folder, index, accelerator.unwrap_model(model), record.get("models", []))

        handle = accelerator.register_load_state_pre_hook(check_models)
        try:
            accelerator.load_state(str(folder))
        except CheckpointError:
            raise
        except Exception as error:
            raise _culprit(folder) or CheckpointError(
                _message(folder, f"loading failed ({_first_line(error)})")
            ) from error
        finally:
            handle.remove()
        try:
            _restore_rng(rng_states)
        except Exception as error:
            raise CheckpointError(
                _message(folder, f"{rng_file.name} holds unusable RNG states ({_first_line(error)})")
            ) from None
        return trainer_state

    @staticmethod
    def _read_record(folder: Path) -> dict[str, Any]:
        """``checkpoint.json``, after checking each file it lists is there with its recorded size."""
        marker = folder / COMPLETE_FILE
        if not marker.is_file():
            return {}  # written before checkpoint.json existed; the readers below still check every file
        try:
            record = json.loads(marker.read_text())
            sizes = dict(record["files"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(_message(folder, f"{COMPLETE_FILE} is corrupt ({_first_line(error)})")) from None
        for name, size in sizes.items():
            file = folder / name
            if not file.is_file():
                raise CheckpointError(_message(folder, f"{name} is missing"))
            if file.stat().st_size != size:
                cause = (
                    f"{name} has {file.stat().st_size} bytes, {COMPLETE_FILE} recorded {size}: truncated or replaced"
                )
                raise CheckpointError(_message(folder, cause))
        return record


def _model_file(index: int) -> str:
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"


def _check_model_file(folder: Path, index: int, model: nn.Module, saved_classes: Sequence[str]) -> None:
    """Compares a model with the tensor names and shapes in its safetensors header (reads no weights)."""
    name, built = _model_file(index), type(model).__name__
    file = folder / name
    if not file.is_file():
        raise CheckpointError(_message(folder, f"{name} (the weights of {built}) is missing"))
    try:
        with safe_open(file, framework="pt") as handle:
            saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:
        raise CheckpointError(_message(folder, f"{name} is truncated or corrupt ({_first_line(error)})")) from None
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    fix = "resume with the model settings the checkpoint was trained with (its run's config.yaml) or start a new run"
    saved_class = saved_classes[index] if index < len(saved_classes) else None
    if saved.keys() != wanted.keys():
        missing, unexpected = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
        has = f"{saved_class} weights" if saved_class and saved_class != built else "weights of another layout"
        detail = f"{len(missing)} tensors missing" + (f" (e.g. '{missing[0]}')" if missing else "")
        detail += f", {len(unexpected)} unexpected" + (f" (e.g. '{unexpected[0]}')" if unexpected else "")
        raise CheckpointError(
            _message(folder, f"checkpoint has {has} in {name}, this run builds {built} ({detail})", fix)
        )
    differ = [key for key in wanted if saved[key] != wanted[key]]
    if differ:
        key = differ[0]
        cause = (
            f"{name}: '{key}' is {saved[key]} in the checkpoint but {wanted[key]} in this run's {built} "
            f"({len(differ)} tensors differ: a different width or size)"
        )
        raise CheckpointError(_message(folder, cause, fix))


def _culprit(folder: Path) -> CheckpointError | None:
    """After a failed load: the error of the first state file that cannot be read."""
    for file in sorted(folder.iterdir()):
        if file.suffix in (".bin", ".pt", ".pkl"):
            try:
                read_state_file(file)
            except CheckpointError as error:
                return error
    return None


def _restore_rng(states: Mapping[str, Any]) -> None:
    """Sets the python, numpy and torch (and CUDA, when saved and present) RNGs."""
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    if "torch_cuda_manual_seed" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])
