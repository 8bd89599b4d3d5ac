"""Ablation studies: specs and their expansion into cells, the cell runner and its backends, statistics, reports.

``recipes/ablate.py`` is the command-line front end; everything here can also be called directly. The names
below are imported on first use: a Slurm or Ray worker unpickling a cell request imports only
``xai_train.ablation.cellrun``, not the report's plotting and statistics (seconds per task on a busy node).
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "AblationSpec": "spec",
    "aggregate": "results",
    "Arm": "spec",
    "Cell": "spec",
    "cell_command": "runner",
    "cell_dir": "runner",
    "cell_row": "results",
    "cell_status": "cellrun",
    "collect_cells": "results",
    "expand_arms": "spec",
    "expand_cells": "spec",
    "load_spec": "spec",
    "parse_spec": "spec",
    "run_cells": "runner",
    "summarize": "stats",
    "welch_compare": "stats",
    "write_report": "report",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'xai_train.ablation' has no attribute '{name}'")
    return getattr(importlib.import_module(f"xai_train.ablation.{EXPORTS[name]}"), name)
