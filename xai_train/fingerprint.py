"""The environment a number was computed in, and which differences in it change the numbers.

A run's ``summary.json`` carries :func:`environment_fingerprint`: library versions, device and GPU, CPU
model, thread counts, determinism flags, precision, process count, seed and the FD/KID feature extractor.
Measured on the 2-core development machine (docs/reproducibility.md): the same GAN cell gives the same bits
again only at the same thread count, CPU, versions and extractor; between 1 and 2 threads its final FD moved
by as much as the seed-to-seed spread. So the ablation report compares the :data:`NUMERIC_FIELDS` of its
cells and refuses to aggregate cells that differ in any of them (``recipes/ablate.py --allow-mixed`` to
override, and the report then says so).

Example:
    >>> fingerprint = environment_fingerprint(seed=3)
    >>> fingerprint["seed"], fingerprint["device"], fingerprint["torch_threads"] >= 1
    (3, 'cpu', True)
    >>> numeric_differences({"a": fingerprint, "b": {**fingerprint, "seed": 4}})  # the seed is not compared
    {}
    >>> numeric_differences({"a": fingerprint, "b": {**fingerprint, "torch_threads": 99}})["torch_threads"]["b"]
    99
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

LIBRARIES = ("torch", "diffusers", "accelerate", "captum", "numpy", "safetensors")
"""Libraries whose versions are recorded (each may change kernels, schedulers or attribution code)."""

NUMERIC_FIELDS = (
    *LIBRARIES,
    "device",
    "gpu",
    "cuda",
    "cudnn",
    "cpu",
    "cpu_capability",
    "torch_threads",
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "tf32_matmul",
    "tf32_cudnn",
    "mixed_precision",
    "processes",
    "extractor",
)
"""Fingerprint fields whose difference changes the numbers (the seed differs between cells by design)."""


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), or ``"unknown"``.

    Example:
        >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
        True
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels dispatch to (``AVX512``, ``AVX2``, ``DEFAULT``, ...): two CPUs with the
    same model string may still round differently when this differs.

    Example:
        >>> cpu_capability() != ""
        True
    """
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # older torch
        return "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@cache
def source_commit() -> str | None:
    """The git commit of this checkout (with ``+dirty`` when it has uncommitted changes), or ``None``.

    Recorded, not compared: cells of one ablation may run across harmless commits (docs, other packages).
    """
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment_fingerprint(
    accelerator: Accelerator | None = None, *, seed: int | None = None, extractor: str | None = None
) -> dict[str, Any]:
    """Everything about the environment that can change a run's numbers, plus what identifies the run.

    Args:
        accelerator: gives the device, the process count and the mixed precision (``None``: this process's
            default device, one process, no mixed precision).
        seed: the run's seed.
        extractor: the FD/KID feature extractor's name (its weights' hash), when the run evaluates.

    Returns:
        A JSON-ready dict: :data:`NUMERIC_FIELDS` plus ``python``, ``platform``, ``cpus``, ``omp_num_threads``,
        ``xai_train_commit`` and ``seed``.
    """
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    cuda = device.type == "cuda"
    fingerprint: dict[str, Any] = {name: _version(name) for name in LIBRARIES}
    fingerprint.update(
        {
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "device": device.type,
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cpu": cpu_model(),
            "cpu_capability": cpu_capability(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic) if cuda else None,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
            "mixed_precision": accelerator.mixed_precision if accelerator is not None else "no",
            "processes": accelerator.num_processes if accelerator is not None else 1,
            "extractor": extractor,
            "xai_train_commit": source_commit(),
            "seed": seed,
        }
    )
    return fingerprint


def numeric_differences(fingerprints: Mapping[str, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """The :data:`NUMERIC_FIELDS` on which the given fingerprints disagree.

    Args:
        fingerprints: label (e.g. a cell ``arm/seed_0``) -> its fingerprint; ``None`` (no fingerprint: a run
            made before fingerprints existed) differs from any present one, in the field ``fingerprint`` (when
            none has one, nothing can be compared and nothing is reported). A field is compared across the
            fingerprints that hold it (older versions did not record every field).

    Returns:
        field -> {label: value} for each field with more than one value (empty when all agree).

    Example:
        >>> numeric_differences({"a": {"cpu": "x", "seed": 0}, "b": {"cpu": "y", "seed": 1}, "c": None})
        {'fingerprint': {'a': 'present', 'b': 'present', 'c': 'missing'}, 'cpu': {'a': 'x', 'b': 'y'}}
        >>> numeric_differences({"a": None, "b": None}), numeric_differences({"a": {"cpu": "x"}, "b": {}})
        ({}, {})
        >>> numeric_differences({"a": {"cpu": "x"}, "b": {}, "c": {"cpu": "y"}})
        {'cpu': {'a': 'x', 'c': 'y'}}
    """
    differences: dict[str, dict[str, Any]] = {}
    present = {label: fp for label, fp in fingerprints.items() if fp is not None}
    if present and len(present) != len(fingerprints):
        differences["fingerprint"] = {
            label: "present" if fp is not None else "missing" for label, fp in fingerprints.items()
        }
    for field in NUMERIC_FIELDS:
        values = {label: fp[field] for label, fp in present.items() if field in fp}  # older versions lack some
        if len({repr(value) for value in values.values()}) > 1:
            differences[field] = values
    return differences


def describe_differences(differences: Mapping[str, Mapping[str, Any]], limit: int = 3) -> list[str]:
    """One line per differing field: ``torch_threads: 1 (arm/seed_0, ...); 2 (arm/seed_3)``.

    Example:
        >>> describe_differences({"torch_threads": {"a/seed_0": 1, "a/seed_1": 2, "b/seed_0": 1}})
        ['torch_threads: 1 (a/seed_0, b/seed_0); 2 (a/seed_1)']
    """
    lines = []
    for field, values in differences.items():
        groups: dict[str, list[str]] = {}
        for label, value in values.items():
            groups.setdefault(value if isinstance(value, str) else repr(value), []).append(label)
        parts = [
            f"{value} ({', '.join(labels[:limit])}{', ...' if len(labels) > limit else ''})"
            for value, labels in groups.items()
        ]
        lines.append(f"{field}: " + "; ".join(parts))
    return lines
