"""Compute FD/KID of a trained GAN run's checkpoint, the way its training-time evaluation does.

    python recipes/evaluate.py runs/demo                              # the latest checkpoint, the run's eval settings
    python recipes/evaluate.py runs/demo --checkpoint best --num-samples 5000
    python recipes/evaluate.py runs/demo --threads 2 --output runs/demo/eval_latest.json

The generator (EMA weights when the run kept them) draws the same seeded latents as ``callbacks.EvalMetrics``
during training, and the metrics use the run's dataset as the real set and its feature extractor (shipped with
the package for digits and shapes). It runs on the CPU, where sampling and metrics use one thread: the numbers are
the same bits whatever --threads says, and equal the run's own metrics.jsonl line for that step when the run was
trained on a CPU (a GPU-trained run's evaluation ran GPU kernels: close, not equal). A warning says when the
run's metrics.jsonl used another extractor. Prints one JSON line: the metrics, the extractor name and SHA-256,
the checkpoint, and the environment fingerprint; --output also writes it to a file. See docs/reproducibility.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loads OpenMP (see xai_train/threads.py)

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from accelerate import Accelerator

from callbacks import EvalMetrics
from xai_train.atomic import atomic_write
from xai_train.callback import TrainState
from xai_train.cli import count, run_main
from xai_train.config import read_yaml
from xai_train.errors import UserError
from xai_train.fingerprint import environment_fingerprint
from xai_train.runs import load_gan_run
from xai_train.threads import configure_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a GAN run folder (runs/demo) or a corrected-generator folder")
    parser.add_argument("--checkpoint", default="latest", help="latest, best or step_<N> (default latest)")
    parser.add_argument("--num-samples", type=count, help="generated samples (default: the run's eval.num_samples)")
    parser.add_argument("--seed", type=int, help="latent and KID-subset seed (default: the run's run.seed)")
    parser.add_argument("--threads", help="torch threads: N or auto (the metrics do not depend on it)")
    parser.add_argument("--output", help="also write the JSON record to this file")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)

    config_file = Path(args.run) / "config.yaml"
    if config_file.is_file() and "unet" in (read_yaml(config_file) or {}):
        raise UserError(
            f"'{args.run}' is a diffusion run; recipes/evaluate.py evaluates GAN runs (a diffusion run's FD/KID "
            "are in its metrics.jsonl, computed the same way during training; recipes/sample.py draws samples)"
        )
    run = load_gan_run(args.run, args.checkpoint)
    config = run.config
    settings = config.eval.callback_kwargs(config.data, config.run.seed if args.seed is None else args.seed)
    if args.num_samples is not None:
        settings["num_samples"] = args.num_samples
    evaluation = EvalMetrics(**settings)
    accelerator = Accelerator(cpu=True)  # one process; the metrics' numbers are the CPU's
    state = TrainState(accelerator, max_steps=0, models={"generator": run.generator.eval()})
    metrics = evaluation.evaluate(state)
    logged = Path(args.run) / "metrics.jsonl"
    if logged.is_file():
        lines = [line for line in logged.read_text().splitlines() if line.strip()]
        earlier = json.loads(lines[-1]).get("extractor") if lines else None
        if earlier is not None and earlier != metrics["extractor"]:
            print(
                f"warning: {logged} was measured on the extractor {earlier}, this on {metrics['extractor']}: "
                "the numbers are not comparable",
                file=sys.stderr,
            )
    record = {
        "run": str(args.run),
        "checkpoint": str(run.folder),
        **{key: value for key, value in metrics.items() if key not in ("step", "is_best", "eval_time_s")},
        "eval_time_s": round(metrics["eval_time_s"], 3),
        "fingerprint": environment_fingerprint(accelerator, seed=settings["seed"], extractor=evaluation.extractor.name),
        "threads": dataclasses.asdict(threads),
        "metric_threads": 1,  # sampling and metrics run single-threaded on the CPU (xai_train.threads)
    }
    line = json.dumps(record)
    print(line)
    if args.output:
        atomic_write(Path(args.output), json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)  # a user error: one "error: ..." line, exit code 2 (--debug shows the traceback)
