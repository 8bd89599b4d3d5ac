"""Install carried wheels without a package index, then check that this Python can run xai_train.

Runs on the GPU machine's own ``python3`` (no registry there; docs/gpu.md). Each wheel of ``--wheels`` is
installed with ``pip install --no-index --no-deps --target TARGET``, one at a time, and the first failure
stops the run with one line. ``--target`` and not ``--user`` or a venv: the machine's ``python3`` is itself a
venv, and a venv made from it with ``--system-site-packages`` would see the base interpreter's packages, not
the torch next to it. Because ``--no-deps`` skips pip's resolver, the requirements of every installed wheel
are then checked here against what the interpreter plus TARGET hold (extras ignored, markers evaluated).
Last, every module the check imports is imported once.

    python3 scripts/offline_install.py --wheels wheels --target /tmp/site   # then PYTHONPATH=/tmp/site:...
    python3 scripts/offline_install.py                                      # only the import check

Exit 0 and one "ready:" line on stdout; exit 1 and one "error:" line on stderr (pip's output goes to
stdout, above it, for the log).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement

# What `import xai_train`, the benchmarks, the demo and the GPU tests import (setup.cfg install_requires + pytest).
MODULES = (
    "torch",
    "accelerate",
    "diffusers",
    "captum",
    "tensorboard",
    "einops",
    "safetensors",
    "yaml",
    "tqdm",
    "PIL",
    "sklearn",
    "matplotlib",
    "scipy",
    "pytest",
)


class Stop(Exception):
    """One line that ends the run."""


def install(wheels: Path, target: Path) -> list[str]:
    """Installs every ``*.whl`` of ``wheels`` into ``target``; returns the installed distribution names."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise Stop(f"no wheels in '{wheels}': run `make device-wheels` on a machine with a registry and carry it")
    names = [file.name.split("-")[0].lower() for file in files]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise Stop(f"'{wheels}' holds several versions of {', '.join(twice)}: keep one (make device-wheels)")
    for file in files:
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile"]
        command += ["--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(target), str(file)]
        print("$", " ".join(command), flush=True)
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise Stop(f"installing {file.name} failed (pip exit {done.returncode}); pip's output is above")
    return names


def check_requirements(target: Path) -> None:
    """Every requirement of every distribution in ``target`` is met by the interpreter plus ``target``."""
    for dist in metadata.distributions(path=[str(target)]):
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                found = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                found = None
            if found is None or not requirement.specifier.contains(found, prereleases=True):
                have = f"found {found}" if found else "it is not installed"
                raise Stop(
                    f"{dist.metadata['Name']} needs '{requirement}' and {sys.executable} lacks it ({have}); "
                    "add it to scripts/device_wheels.sh and run make device-wheels again"
                )


def check_imports() -> None:
    """Imports each of :data:`MODULES`; the first that fails is the error."""
    for module in MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # an ImportError, or a broken package: either way the check cannot run
            raise Stop(
                f"{sys.executable} cannot import {module} ({type(error).__name__}: {error}); carry its wheel "
                "(make device-wheels, docs/gpu.md) or use a Python that has it"
            ) from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder of .whl files to install (default: install nothing)")
    parser.add_argument("--target", type=Path, help="where --wheels go; put it first on PYTHONPATH afterwards")
    args = parser.parse_args(argv)
    if (args.wheels is None) != (args.target is None):
        parser.error("--wheels and --target go together")
    installed: list[str] = []
    try:
        if args.wheels is not None:
            installed = install(args.wheels, args.target)
            sys.path.insert(0, str(args.target))
            importlib.invalidate_caches()
            check_requirements(args.target)
        check_imports()
    except Stop as stop:
        print(f"error: {stop}", file=sys.stderr)
        return 1
    print(f"ready: {sys.executable}" + (f" + {len(installed)} wheels ({', '.join(installed)})" if installed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
