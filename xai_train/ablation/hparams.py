"""TensorBoard HParams of an ablation: one entry per cell, so arms can be sorted and filtered in the UI.

tensorboard --logdir <ablation_dir>/hparams
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xai_train.ablation.spec import format_value


def hparam_value(value: Any) -> int | float | str | bool:
    """A value TensorBoard's HParams accepts (numbers, strings, booleans); others become their YAML text.

    Example:
        >>> hparam_value(0.2), hparam_value([0.5, 0.99]), hparam_value(None)
        (0.2, '[0.5, 0.99]', 'null')
    """
    if isinstance(value, (bool, int, float, str)):
        return value
    return format_value(value)


def write_hparams(
    rows: Sequence[Mapping[str, Any]], arm_overrides: Mapping[str, Mapping[str, Any]], directory: str | Path
) -> Path:
    """Writes one HParams run per finished cell under ``directory/<arm>/seed_<s>`` (replacing old ones).

    Args:
        rows: ``cell_row`` dicts; the numeric ``final_*``, ``best_*`` and time columns become the metrics.
        arm_overrides: arm -> its overrides (the hyper-parameters shown, with ``arm`` and ``seed``).
        directory: the HParams log directory (deleted and rewritten, so re-aggregating does not duplicate).

    Returns:
        ``directory``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    keys = sorted({key for overrides in arm_overrides.values() for key in overrides})
    numeric = {
        key
        for key in keys
        if all(
            isinstance(o.get(key), (int, float)) and not isinstance(o.get(key), bool) for o in arm_overrides.values()
        )
    }
    for row in rows:
        if not row.get("finished"):
            continue
        overrides = arm_overrides.get(row["arm"], {})
        hparams = {"arm": row["arm"], "seed": int(row["seed"])}
        # Every run gets every key, with one type per key: numbers stay numbers only where every arm sets one
        # (e.g. an alpha sweep); otherwise text, with "default" where the arm leaves the key alone.
        hparams.update(
            {
                key: hparam_value(overrides[key])
                if key in numeric
                else (format_value(overrides[key]) if key in overrides else "default")
                for key in keys
            }
        )
        metrics = {
            f"ablation/{name}": float(value)
            for name, value in row.items()
            if (name.startswith(("final_", "best_")) or name in ("train_seconds", "median_step_time"))
            and not name.endswith("_step")
            and isinstance(value, (int, float))
            and math.isfinite(value)
        }
        # What SummaryWriter.add_hparams writes, but into this writer's own event file (add_hparams opens a
        # second one per run).
        with SummaryWriter(log_dir=str(directory / row["arm"] / f"seed_{row['seed']}")) as writer:
            for summary in hparams_summaries(hparams, metrics):
                writer.file_writer.add_summary(summary)
            for name, value in metrics.items():
                writer.add_scalar(name, value)
    return directory
