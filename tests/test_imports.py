"""Importing any module of the library or the callbacks has no side effect: nothing printed, no file written,
no environment variable or torch setting changed (pytest's --doctest-modules imports every one of them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = r"""
import contextlib, importlib, io, json, os, pkgutil, sys
environment, files = dict(os.environ), set(os.listdir("."))
printed, names = io.StringIO(), []
with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
    for package in ("xai_train", "callbacks"):
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
import torch
changed = sorted(k for k in set(environment) | set(os.environ) if environment.get(k) != os.environ.get(k))
print(json.dumps({"modules": names, "printed": printed.getvalue(), "files": sorted(set(os.listdir(".")) - files),
                  "changed": changed, "threads": torch.get_num_threads()}))
"""
# torch sets TORCHINDUCTOR_CACHE_DIR when a dependency imports torch._inductor: not ours, and harmless.
THIRD_PARTY_VARIABLES = {"TORCHINDUCTOR_CACHE_DIR"}


@pytest.mark.slow
def test_importing_every_module_has_no_side_effects(tmp_path, process_groups):
    work = tmp_path / "work"  # HOME is elsewhere: matplotlib caches its font list there on first import
    work.mkdir()
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    environment["OMP_NUM_THREADS"] = "1"
    done = process_groups.run(
        [sys.executable, "-c", PROBE], cwd=work, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 100  # every module was found and imported
    assert "xai_train.threads" in report["modules"] and "xai_train.benchmarks.contention" in report["modules"]
    assert report["printed"] == ""
    assert report["files"] == []  # nothing in the working directory
    assert set(report["changed"]) <= THIRD_PARTY_VARIABLES  # e.g. no OMP_WAIT_POLICY set on import
    assert report["threads"] == 1
