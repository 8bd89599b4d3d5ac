import json
import os
import stat

import pytest

from xai_train.atomic import append_line, atomic_path, atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "best.json", json.dumps({"step": 1}))
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(path) as tmp:
        tmp.write_text('{"step": 2, "val')  # half a file...
        raise RuntimeError("disk on fire")  # ...then the writer dies
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_replaced_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "summary.json", b"{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_temporary_name_is_hidden_and_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "grid.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".grid.png.") and tmp.suffix == ".png"
        tmp.write_bytes(b"png")
    assert (tmp_path / "grid.png").read_bytes() == b"png"


def test_append_line_keeps_only_whole_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_line(path, json.dumps({"step": 1}))
    with open(path, "a") as handle:
        handle.write('{"step": 2, "fd": 1')  # a record torn by a kill
    append_line(path, json.dumps({"step": 2, "fd": 1.5}))
    append_line(path, json.dumps({"step": 3}))
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1},
        {"step": 2, "fd": 1.5},
        {"step": 3},
    ]
    with pytest.raises(ValueError, match="one line"):
        append_line(path, "a\nb")


def test_append_line_drops_a_torn_first_record_longer_than_a_read_chunk(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("x" * 10_000)  # no newline anywhere: the only record is torn
    append_line(path, "{}")
    assert path.read_text() == "{}\n"
