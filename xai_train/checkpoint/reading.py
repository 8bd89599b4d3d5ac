"""Reading a checkpoint folder safely: listing, ``weights_only`` unpickling, checks, one error type.

Everything here only reads. Each failure is a ``CheckpointError`` whose one-line message names the folder,
the file, the cause and the fix.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from xai_train.errors import UserError

TRAINER_STATE_FILE = "trainer_state.pt"
COMPLETE_FILE = "checkpoint.json"
STEP_DIR = re.compile(r"^step_(\d+)$")
# The globals numpy arrays and dtypes need to unpickle (Accelerate's RNG states hold numpy's state).
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
_NUMPY_GLOBALS = [_NUMPY_CORE.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


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
    return [p for p in step_folders(directory) if (p / COMPLETE_FILE).is_file()]


def step_folders(directory: str | Path) -> list[Path]:
    """Every ``step_<N>`` folder, complete or not, oldest first (what pruning counts)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
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
        raise CheckpointError(message(path.parent, f"{path.name} is missing")) from None
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error).lower() or "unsupported global" in str(error).lower():
            cause = (
                f"{path.name} holds objects other than tensors and plain values; they were refused, "
                "never run (loading never runs code from a checkpoint)"
            )
            raise CheckpointError(message(path.parent, cause, "only resume from checkpoints xai_train wrote")) from None
        raise CheckpointError(message(path.parent, f"{path.name} is corrupt ({first_line(error)})")) from None
    except Exception as error:  # truncated zip archives raise RuntimeError/EOFError/OSError, depending on where
        raise CheckpointError(
            message(path.parent, f"{path.name} is truncated or corrupt ({first_line(error)})")
        ) from None


def first_line(error: BaseException) -> str:
    """The first sentence of an exception's message (torch's run over several lines)."""
    lines = str(error).strip().splitlines()
    return (lines[0].split(". ")[0] if lines else type(error).__name__)[:200]


def message(folder: Path, cause: str, fix: str | None = None) -> str:
    """``cannot resume from <folder>: <cause>; <fix>``; the default fix names the other checkpoints."""
    if fix is None:
        others = [p.name for p in list_checkpoints(folder.parent) if p != folder]
        fix = "resume from another checkpoint" + (f" (found: {', '.join(others)})" if others else "")
        fix += " or start a fresh run"
    return f"cannot resume from {folder}: {cause}; {fix}"


def read_record(folder: Path) -> dict[str, Any]:
    """``checkpoint.json``, after checking each file it lists is there with its recorded size."""
    marker = folder / COMPLETE_FILE
    if not marker.is_file():
        return {}  # written before checkpoint.json existed; the readers below still check every file
    try:
        record = json.loads(marker.read_text())
        sizes = dict(record["files"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(message(folder, f"{COMPLETE_FILE} is corrupt ({first_line(error)})")) from None
    for name, size in sizes.items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(message(folder, f"{name} is missing"))
        if file.stat().st_size != size:
            cause = f"{name} has {file.stat().st_size} bytes, {COMPLETE_FILE} recorded {size}: truncated or replaced"
            raise CheckpointError(message(folder, cause))
    return record


def _model_file(index: int) -> str:
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"


def check_model_file(folder: Path, index: int, model: nn.Module, saved_classes: Sequence[str]) -> None:
    """Compares a model with the tensor names and shapes in its safetensors header (reads no weights)."""
    name, built = _model_file(index), type(model).__name__
    file = folder / name
    if not file.is_file():
        raise CheckpointError(message(folder, f"{name} (the weights of {built}) is missing"))
    try:
        with safe_open(file, framework="pt") as handle:
            saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:
        raise CheckpointError(message(folder, f"{name} is truncated or corrupt ({first_line(error)})")) from None
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    fix = "resume with the model settings the checkpoint was trained with (its run's config.yaml) or start a new run"
    saved_class = saved_classes[index] if index < len(saved_classes) else None
    if saved.keys() != wanted.keys():
        missing, unexpected = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
        has = f"{saved_class} weights" if saved_class and saved_class != built else "weights of another layout"
        detail = f"{len(missing)} tensors missing" + (f" (e.g. '{missing[0]}')" if missing else "")
        detail += f", {len(unexpected)} unexpected" + (f" (e.g. '{unexpected[0]}')" if unexpected else "")
        raise CheckpointError(
            message(folder, f"checkpoint has {has} in {name}, this run builds {built} ({detail})", fix)
        )
    differ = [key for key in wanted if saved[key] != wanted[key]]
    if differ:
        key = differ[0]
        cause = (
            f"{name}: '{key}' is {saved[key]} in the checkpoint but {wanted[key]} in this run's {built} "
            f"({len(differ)} tensors differ: a different width or size)"
        )
        raise CheckpointError(message(folder, cause, fix))


def culprit(folder: Path) -> CheckpointError | None:
    """After a failed load: the error of the first state file that cannot be read."""
    for file in sorted(folder.iterdir()):
        if file.suffix in (".bin", ".pt", ".pkl"):
            try:
                read_state_file(file)
            except CheckpointError as error:
                return error
    return None


def restore_rng(states: Mapping[str, Any]) -> None:
    """Sets the python, numpy and torch (and CUDA, when saved and present) RNGs.

    A process saves one CUDA state per visible GPU. Resumed where fewer GPUs are visible, the first
    ``min(saved, available)`` states are restored and a warning says how many were dropped (the later GPUs'
    random streams then start afresh); ``torch.cuda.set_rng_state_all`` would fail on the missing devices.

    Example:
        >>> restore_rng({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
        ...              "torch_manual_seed": torch.get_rng_state()})
    """
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    if "torch_cuda_manual_seed" in states and torch.cuda.is_available():
        saved = list(states["torch_cuda_manual_seed"])
        available = torch.cuda.device_count()
        if len(saved) > available:
            warnings.warn(
                f"the checkpoint holds CUDA RNG states of {len(saved)} GPUs, this process sees {available}: "
                f"restoring the first {available}; random draws on the other GPUs will differ from the saved run",
                stacklevel=2,
            )
        torch.cuda.set_rng_state_all(saved[:available])
