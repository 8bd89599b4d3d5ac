"""Ablation studies: specs and their expansion into cells, the cell runner, statistics, and reports.

``recipes/ablate.py`` is the command-line front end; everything here can also be called directly.
"""

from xai_train.ablation.report import write_report
from xai_train.ablation.results import aggregate, cell_row, collect_cells
from xai_train.ablation.runner import cell_command, cell_dir, cell_status, run_cells
from xai_train.ablation.spec import AblationSpec, Arm, Cell, expand_arms, expand_cells, load_spec, parse_spec
from xai_train.ablation.stats import summarize, welch_compare

__all__ = [
    "AblationSpec",
    "aggregate",
    "Arm",
    "Cell",
    "cell_command",
    "cell_dir",
    "cell_row",
    "cell_status",
    "collect_cells",
    "expand_arms",
    "expand_cells",
    "load_spec",
    "parse_spec",
    "run_cells",
    "summarize",
    "welch_compare",
    "write_report",
]
