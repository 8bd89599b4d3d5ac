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

from xai_train.checkpoint.manager import CheckpointManager
from xai_train.checkpoint.reading import (
    COMPLETE_FILE,
    TRAINER_STATE_FILE,
    CheckpointError,
    list_checkpoints,
    read_state_file,
)

__all__ = [
    "COMPLETE_FILE",
    "TRAINER_STATE_FILE",
    "CheckpointError",
    "CheckpointManager",
    "list_checkpoints",
    "read_state_file",
]
