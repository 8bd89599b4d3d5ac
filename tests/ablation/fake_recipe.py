"""A stand-in recipe for the runner tests: parses ``--config X key=value ...`` and writes what a recipe writes.

Overrides it understands: ``train.max_steps`` (default 4), ``fake.fd`` (the FD it reports, default 10),
``fake.fail=true`` (prints an error and exits 1), ``fake.crash=true`` (leaves a checkpoint, no summary, exit 1),
``fake.cpu`` (the CPU its fingerprint names), ``fake.sleep`` (seconds to wait; ``wall`` in the summary holds the
start and end times). Its fingerprint's ``torch_threads`` is the ``XAI_TRAIN_THREADS``
it was given (what a real recipe would run with).
Every call is appended to ``<run.output_dir>/<run.name>/calls.txt``.
"""

import json
import os
import sys
import time
from pathlib import Path

import yaml


def main(argv):
    assert argv[0] == "--config", argv
    values = dict(arg.split("=", 1) for arg in argv[2:])
    run_dir = Path(values["run.output_dir"]) / values["run.name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.txt", "a") as calls:
        calls.write(" ".join(argv) + "\n")
    print("fake recipe starting", values)
    if yaml.safe_load(values.get("fake.fail", "false")):
        print("error: fake.fail was set", file=sys.stderr)
        return 1
    (run_dir / "checkpoints" / "step_2").mkdir(parents=True, exist_ok=True)
    if yaml.safe_load(values.get("fake.crash", "false")):
        return 1
    started = time.time()
    time.sleep(float(values.get("fake.sleep", 0)))
    steps = int(values.get("train.max_steps", 4))
    fd = float(values.get("fake.fd", 10)) + int(values["run.seed"])
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        for step, value in ((steps // 2, 2 * fd), (steps, fd)):
            metrics.write(json.dumps({"step": step, "extractor": "fake-cnn", "fd": value, "num_samples": 8}) + "\n")
    fingerprint = {
        "torch_threads": os.environ.get("XAI_TRAIN_THREADS"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": values.get("fake.cpu", "fake-cpu"),
        "extractor": "fake-cnn",
        "seed": int(values["run.seed"]),
    }
    summary = {
        "steps": steps,
        "max_steps": steps,
        "train_seconds": 1.0,
        "median_step_time": 0.25,
        "fingerprint": fingerprint,
        "wall": [started, time.time()],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
