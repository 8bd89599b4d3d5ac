"""A results page in ``docs/results``: the settings it states, and :func:`publish`, which copies an aggregated
ablation (per-seed ``cells.csv``, ``results.csv``, ``comparisons.csv``, plots) next to the page and puts the
generated report between markers in it, keeping the hand-written text around them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xai_train.ablation.results import ArmResult, CellResult
from xai_train.ablation.spec import format_value
from xai_train.atomic import atomic_write
from xai_train.errors import UserError

SETTINGS = (
    ("data", ("data.name", "data.image_size", "data.channels", "data.fraction", "data.num_samples")),
    ("model", ("model.arch", "model.g_width", "model.d_width", "model.block_out_channels", "model.latent_dim")),
    ("training", ("train.max_steps", "train.batch_size", "train.lr_g", "train.lr_d", "train.lr", "train.betas")),
    ("evaluation", ("eval.num_samples", "eval.every_n_steps", "eval.metrics")),
)
"""The config keys a page states (those a cell's ``config.yaml`` has), grouped; a key the arms set differently
is shown per arm."""

KID_SCALE = (
    "KID as logged, unscaled (the unbiased MMD² of a cubic polynomial kernel, γ = 1/feature dimension, averaged "
    "over random subsets: `xai_train/metrics/kid.py`; not ×1000)"
)


def settings_lines(cells: Sequence[CellResult], results: Sequence[ArmResult]) -> list[str]:
    """The page's settings from the finished cells: config keys (:data:`SETTINGS`), seeds, reference set, KID.

    Example:
        >>> cell = CellResult("v", 0, True, {}, [{"step": 5, "reference": "mnist5k/heldout", "num_real": 1000}],
        ...                   {"data": {"name": "mnist5k"}, "train": {"max_steps": 5}})
        >>> settings_lines([cell], [])[:3]  # doctest: +NORMALIZE_WHITESPACE
        ['data: name `mnist5k`', 'training: max_steps `5`',
         'evaluation reference set: `mnist5k/heldout` (1000 images)']
    """
    finished = [cell for cell in cells if cell.finished]
    lines = []
    for group, keys in SETTINGS:
        shown = []
        for key in keys:
            per_arm: dict[str, set[str]] = {}
            for cell in finished:
                value = _lookup(cell.config, key)
                if value is not None:
                    per_arm.setdefault(cell.arm, set()).add(format_value(value))
            if not per_arm:
                continue
            values = set().union(*per_arm.values())
            name = key.split(".", 1)[1]
            if len(values) == 1:
                shown.append(f"{name} `{values.pop()}`")
            else:
                shown.append(f"{name}: " + ", ".join(f"{arm} `{'/'.join(sorted(v))}`" for arm, v in per_arm.items()))
        if shown:
            lines.append(f"{group}: " + ", ".join(shown))
    references = sorted(
        {(str(c.curve[-1].get("reference")), c.curve[-1].get("num_real")) for c in finished if c.curve}, key=str
    )
    if references and all(ref != "None" for ref, _ in references):
        lines.append("evaluation reference set: " + ", ".join(f"`{ref}` ({count} images)" for ref, count in references))
    elif references:
        lines.append("evaluation reference set: not recorded (runs made before metrics.jsonl named it)")
    if results:
        lines.append("seeds: " + "; ".join(f"{r.arm} {_seed_ranges(r.seeds)} ({r.n})" for r in results))
    if finished:
        lines.append(KID_SCALE)
    return lines


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _seed_ranges(seeds: Sequence[int]) -> str:
    ordered = sorted(seeds)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{ordered[0]}–{ordered[-1]}"
    return ", ".join(map(str, ordered))


BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def publish(ablation_dir: str | Path, page_path: str | Path) -> list[Path]:
    """Copies an aggregated ablation next to a results page and puts the generated report into it.

    ``<stem>_cells.csv`` (per-seed values), ``<stem>_results.csv``, ``<stem>_comparisons.csv`` and
    ``<stem>_<metric>.png`` are written beside ``page_path``; the page's text between ``<!-- report:begin -->``
    and ``<!-- report:end -->`` is replaced by ``results.md`` (its title dropped, plots renamed). A page without
    the markers gets them, with the report, at its end; a missing page is created. Hand-written text outside
    the markers (a protocol, a reading) is kept.

    Args:
        ablation_dir: an ablation folder that ``write_report`` has aggregated.
        page_path: the page, e.g. ``docs/results/mnist_xaigan_confirmatory.md``.

    Returns:
        The files written.

    Raises:
        UserError: ``ablation_dir`` has no ``results.md`` (run the report first).

    Example:
        >>> import tempfile
        >>> run, docs = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
        >>> _ = (run / "results.md").write_text("# Ablation `demo`\\n\\n![fd_curves.png](fd_curves.png)\\n")
        >>> _ = (run / "cells.csv").write_text("arm,seed\\n")
        >>> _ = (run / "fd_curves.png").write_bytes(b"PNG")
        >>> _ = (docs / "demo.md").write_text("# Demo\\n\\nProtocol.\\n")
        >>> [p.name for p in publish(run, docs / "demo.md")]
        ['demo_cells.csv', 'demo_fd.png', 'demo.md']
        >>> print((docs / "demo.md").read_text())  # doctest: +NORMALIZE_WHITESPACE
        # Demo
        <BLANKLINE>
        Protocol.
        <BLANKLINE>
        <!-- report:begin -->
        Generated by `xai_train.ablation.page.publish`; per-seed values: [demo_cells.csv](demo_cells.csv).
        <BLANKLINE>
        ![demo_fd.png](demo_fd.png)
        <!-- report:end -->
        <BLANKLINE>
    """
    ablation_dir, page_path = Path(ablation_dir), Path(page_path)
    if not (ablation_dir / "results.md").is_file():
        raise UserError(f"'{ablation_dir}' has no results.md: aggregate it first (recipes/ablate.py --report-only)")
    stem, folder = page_path.stem, page_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("cells.csv", "results.csv", "comparisons.csv"):
        if (ablation_dir / name).is_file():
            written.append(Path(shutil.copyfile(ablation_dir / name, folder / f"{stem}_{name}")))
    report = (ablation_dir / "results.md").read_text()
    for plot in sorted(ablation_dir.glob("*_curves.png")):
        target = folder / f"{stem}_{plot.name.removesuffix('_curves.png')}.png"
        written.append(Path(shutil.copyfile(plot, target)))
        report = report.replace(plot.name, target.name)
    body = re.sub(r"\A# [^\n]*\n+", "", report).strip()
    block = (
        f"{BEGIN}\nGenerated by `xai_train.ablation.page.publish`; per-seed values: "
        f"[{stem}_cells.csv]({stem}_cells.csv).\n\n{body}\n{END}"
    )
    page = page_path.read_text() if page_path.is_file() else f"# {stem}\n"
    if BEGIN in page and END in page:
        head, rest = page.split(BEGIN, 1)
        page = head + block + rest.split(END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(page_path, page)
    return [*written, page_path]


def cells_from_page(text: str) -> list[dict[str, Any]]:
    """The per-cell rows of a page's ``## Cells`` table (as ``report.markdown_report`` writes it), as ``cell_row``-like
    dicts: ``arm``, ``seed``, ``finished``, ``final_<m>``, ``best_<m>``, ``best_<m>_step``, ``train_seconds``.

    For pages whose run folders are gone: the table holds 4 significant digits, enough to re-test them.

    Example:
        >>> page = "## Cells\\n\\n| arm | seed | final FD | best FD (step) | train time (s) |\\n"
        >>> page += "|---|---|---|---|---|\\n"
        >>> page += "| plain | 0 | 378.3 | 370.1 (250) | 233.4 |\\n"
        >>> page += "| plain | 1 | unfinished | unfinished | unfinished |\\n"
        >>> cells_from_page(page)  # doctest: +NORMALIZE_WHITESPACE
        [{'arm': 'plain', 'seed': 0, 'finished': True, 'final_fd': 378.3, 'best_fd': 370.1, 'best_fd_step': 250,
          'train_seconds': 233.4}, {'arm': 'plain', 'seed': 1, 'finished': False}]
    """
    names = {"FD": "fd", "KID": "kid", "precision": "precision", "recall": "recall"}
    section = text.split("## Cells", 1)[1] if "## Cells" in text else ""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return []
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        values = [cell.strip() for cell in line.strip("|").split("|")]
        row: dict[str, Any] = {"arm": values[0], "seed": int(values[1]), "finished": "unfinished" not in values}
        if row["finished"]:
            for column, value in zip(header[2:], values[2:], strict=True):
                kind, _, label = column.partition(" ")
                if column == "train time (s)":
                    row["train_seconds"] = float(value)
                elif kind == "final":
                    row[f"final_{names[label]}"] = float(value)
                elif kind == "best":
                    number, _, step = value.partition(" (")
                    metric = names[label.removesuffix(" (step)")]
                    row[f"best_{metric}"], row[f"best_{metric}_step"] = float(number), int(step.rstrip(")"))
        rows.append(row)
    return rows
