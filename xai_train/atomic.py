"""Crash-safe file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every file the project writes goes through here: whole files via ``atomic_write`` / ``atomic_path``
(temporary file in the same folder, flushed to disk, then ``os.replace``), and line logs such as
``metrics.jsonl`` via ``append_line``: each record is one ``write`` of one complete line, and a line torn
by a crash (no trailing newline) is dropped before the next record is appended, so the log only ever
holds whole records.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable (POSIX only; Windows cannot open a directory).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it replaces ``path`` in one step.

    For writers that want a file name (``torch.save``, ``safetensors.save_file``, ``Image.save``,
    ``figure.savefig``). If the block raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: the final file; its folder is created if missing.

    Returns:
        A context manager yielding the temporary path (a hidden name in the same folder, same suffix).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "weights.txt") as tmp:
        ...     _ = tmp.write_text("1 2 3")
        >>> (folder / "weights.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('1 2 3', ['weights.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would end up on the final file; this one gets the umask's mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically.

    Args:
        path: the final file.
        data: the whole new content.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> import json, tempfile
        >>> path = atomic_write(Path(tempfile.mkdtemp()) / "best.json", json.dumps({"step": 3}))
        >>> json.loads(path.read_text())
        {'step': 3}
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def append_line(path: str | Path, line: str) -> Path:
    """Appends one record (a line without newline characters) to a line log such as ``metrics.jsonl``.

    The line and its newline go out in a single ``write`` on a file opened for appending, so records of
    a killed run are whole or absent. A torn last line left by an earlier crash is cut off first.

    Args:
        path: the log file (created if missing).
        line: the record, e.g. ``json.dumps(record)``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: ``line`` contains a newline (it would become two records).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = path.write_text('{"step": 1}\\n{"step": 2, "fd"')  # a crash tore the second record
        >>> _ = append_line(path, '{"step": 2, "fd": 4.5}')
        >>> path.read_text().splitlines()
        ['{"step": 1}', '{"step": 2, "fd": 4.5}']
    """
    if "\n" in line or "\r" in line:
        raise ValueError(f"append_line: a record must be one line, got {line[:60]!r}...")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, _end_of_last_whole_line(fd, size))
        written = os.write(fd, payload)
        if written != len(payload):  # only a full disk or a signal mid-write; never leave half a record
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(f"append_line: wrote {written} of {len(payload)} bytes to {path}")
    finally:
        os.close(fd)
    return path


def _end_of_last_whole_line(fd: int, size: int, chunk: int = 4096) -> int:
    end = size
    while end > 0:
        start = max(0, end - chunk)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
