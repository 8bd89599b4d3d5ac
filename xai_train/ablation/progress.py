"""What a sweep shows while it runs: the status table, the report's "k of N finished" lines, ``failures.json``.

Everything is read from the cell folders (``attempts.jsonl``: host, start time, attempt count) plus the backend's
last word per cell (queued / running / finished / failed / lost, its job id), so a re-attached driver shows the
same table as the one that submitted the cells.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xai_train.ablation.backends import Update
from xai_train.ablation.cellrun import FINISHED, cell_status, read_attempts
from xai_train.atomic import atomic_write

NOT_FINISHED = ("failed", "lost", "queued", "running", "requeued", "missing", "partial")


@dataclass(frozen=True)
class CellProgress:
    """One cell as the table shows it."""

    key: str
    state: str  # queued | running | finished | failed | lost (requeued is derived from the attempts)
    directory: str
    job_id: str = ""
    message: str = ""

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return [record for record in read_attempts(self.directory) if record.get("event") == "start"]

    def moved(self, update: Update) -> CellProgress:
        """This cell after ``update`` (a job id, once known, is kept)."""
        return dataclasses.replace(
            self, state=update.state, job_id=update.job_id or self.job_id, message=update.message or self.message
        )

    def shown_state(self) -> str:
        """``requeued n`` for a queued or running cell whose attempt n+1 is due or running, else the state.

        Example:
            >>> CellProgress("a/seed_0", "queued", "/nonexistent").shown_state()
            'queued'
        """
        starts = len(self.attempts)
        if self.state == "queued" and starts:
            return f"requeued {starts}"
        if self.state == "running" and starts > 1:
            return f"running (requeued {starts - 1})"
        return self.state


def status_table(cells: Sequence[CellProgress], now: float | None = None) -> str:
    """A fixed-width table: cell, state, job id, host, elapsed (of the current or last attempt), log.

    Example:
        >>> print(status_table([CellProgress("a/seed_0", "queued", "/runs/a/seed_0", "17_0")]))
        cell      state   job   host  elapsed  log
        a/seed_0  queued  17_0  -     -        /runs/a/seed_0/log.txt
    """
    now = time.time() if now is None else now
    rows = [("cell", "state", "job", "host", "elapsed", "log")]
    for cell in cells:
        records = read_attempts(cell.directory)
        starts = [record for record in records if record.get("event") == "start"]
        host, elapsed = "-", "-"
        if starts and cell.state != "queued":
            host = str(starts[-1].get("host", "-"))
            ended = [r for r in records if r.get("event") == "end" and r.get("attempt") == starts[-1].get("attempt")]
            end = ended[-1]["time"] if ended else now
            elapsed = format_seconds(end - float(starts[-1]["time"]))
        rows.append((cell.key, cell.shown_state(), cell.job_id or "-", host, elapsed, f"{cell.directory}/log.txt"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_seconds(seconds: float) -> str:
    """``"1h02m"``, ``"3m07s"`` or ``"42s"``.

    Example:
        >>> format_seconds(3725), format_seconds(187), format_seconds(42.4)
        ('1h02m', '3m07s', '42s')
    """
    seconds = int(round(max(0.0, seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def folder_states(directories: Mapping[str, str | Path]) -> dict[str, str]:
    """Each cell's state from its folder alone: ``finished``, ``partial`` or ``missing``.

    Example:
        >>> folder_states({"a/seed_0": "/nonexistent"})
        {'a/seed_0': 'missing'}
    """
    states = {}
    for key, directory in directories.items():
        state = cell_status(directory)
        states[key] = state if state != "new" else "missing"
    return states


def status_lines(cells: Sequence[CellProgress]) -> list[str]:
    """Markdown for the top of ``results.md``: "k of N finished" and a "Not finished" section with log paths.

    A cell counts as finished only if its folder says so (``summary.json`` with ``steps == max_steps``),
    whatever the backend reported.

    Example:
        >>> lines = status_lines([CellProgress("a/seed_0", "failed", "/runs/a/seed_0")])
        >>> lines[0], lines[-1]
        ('**0 of 1 cells finished.**', '| a/seed_0 | failed | `/runs/a/seed_0/log.txt` |')
    """
    finished = [cell for cell in cells if cell_status(cell.directory) == FINISHED]
    lines = [f"**{len(finished)} of {len(cells)} cells finished.**"]
    left = [cell for cell in cells if cell not in finished]
    if left:
        lines += ["", "### Not finished", "", "| cell | state | log |", "|---|---|---|"]
        for cell in left:
            state = cell.shown_state() if cell.state != "finished" else "partial"
            lines.append(f"| {cell.key} | {state} | `{cell.directory}/log.txt` |")
    return lines


def write_failures(path: str | Path, cells: Sequence[CellProgress]) -> Path:
    """``failures.json``: the failed and lost cells (key, state, job id, log, last attempt's exit code and host).

    Example:
        >>> import tempfile
        >>> path = write_failures(Path(tempfile.mkdtemp()) / "failures.json",
        ...                       [CellProgress("a/seed_0", "lost", "/nonexistent", "17_0", "not in squeue")])
        >>> json.loads(path.read_text())[0]["state"]
        'lost'
    """
    failures = []
    for cell in cells:
        if cell.state not in ("failed", "lost"):
            continue
        ends = [record for record in read_attempts(cell.directory) if record.get("event") == "end"]
        last = ends[-1] if ends else {}
        failures.append(
            {
                "cell": cell.key,
                "state": cell.state,
                "job_id": cell.job_id,
                "log": f"{cell.directory}/log.txt",
                "returncode": last.get("returncode"),
                "host": last.get("host"),
                "attempts": len(cell.attempts),
                "message": cell.message,
            }
        )
    atomic_write(Path(path), json.dumps(failures, indent=2) + "\n")
    return Path(path)
