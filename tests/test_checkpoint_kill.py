"""SIGKILL a real training process at many moments (inside saves, renames, prunes and steps).

After every kill: each listed checkpoint loads through the trainer and equals, tensor for tensor, the
checkpoint of the same step of an uninterrupted run; the next process resumes with ``resume=auto`` and
the chain of killed and resumed processes ends bitwise equal to the uninterrupted run.
"""

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xai_train.checkpoint import TRAINER_STATE_FILE, list_checkpoints

WORKER = Path(__file__).with_name("checkpoint_kill_worker.py")
# (event prefix, the n-th occurrence is drawn from 1..limit): about two to three steps' worth of each.
MOMENTS = [
    ("after save", 14),  # a file of the .tmp_ folder written, the next not yet
    ("before replace", 6),  # checkpoint.json / .tmp_ -> step_N / step_N -> .pruning_ about to happen
    ("rmtree", 16),  # half-way through deleting a pruned (or replaced) folder
    ("after replace", 6),
    ("step", 2),  # in the middle of training
    ("time", 0),  # a random moment in the first 0.3 s: startup and loading the checkpoint
]
TIME_CAP = ["step", 3]  # a random-time trial blocks before its third step: slow or fast machine, it never runs far
TRIALS = 30
KEEP = 2


class Zygote:
    def __init__(self, process_groups):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process_groups = process_groups  # the zygote leads a process group: its forked children die with it
        self.process = process_groups.start(
            [sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next(self, prefix=("pid", "ready", "exit", "verified", "error"), timeout=240.0) -> str:
        while True:
            line = self.lines.get(timeout=timeout)  # queue.Empty: the worker hung
            if line.startswith(prefix):
                assert not line.startswith("error"), line
                return line

    def start(self, **request) -> int:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.next().split()[1])

    def close(self):
        self.process.stdin.close()
        self.process_groups.close()  # SIGKILLs the zygote and any forked training process still running


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found = {f"G.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    found.update({f"D.{k}": v for k, v in load_file(folder / "model_1.safetensors").items()})
    state = torch.load(folder / TRAINER_STATE_FILE, weights_only=True)
    found.update({f"ema.{i}": p for i, p in enumerate(state["ema"]["shadow_params"])})
    return found


def assert_same(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{a} vs {b}: {key}"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks one training process per trial")
def test_sigkill_at_any_moment_leaves_loadable_checkpoints_and_resume_is_bitwise(tmp_path, process_groups):
    straight, chain = str(tmp_path / "straight"), str(tmp_path / "chain")
    rng = random.Random(0)
    zygote = Zygote(process_groups)
    kills: list[str] = []
    try:
        zygote.start(run_dir=straight, keep=0, resume="")
        assert zygote.next() == "exit 0"
        reference = {p.name: p for p in list_checkpoints(Path(straight) / "checkpoints")}
        for trial in range(TRIALS):
            pattern, limit = MOMENTS[trial % len(MOMENTS)]
            kill_at = None if pattern == "time" else [pattern, rng.randint(1, limit)]
            cap = TIME_CAP if kill_at is None else None
            pid = zygote.start(run_dir=chain, keep=KEEP, resume="auto", kill_at=kill_at, cap=cap)
            if kill_at is None:
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                line = zygote.next()
                if line == "exit 0":  # finished before reaching that moment
                    break
                assert line.startswith("ready "), line
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # a random-time kill after the run had finished
                pass
            outcome = zygote.next()
            if outcome == "exit 0":
                break
            assert outcome == "exit -9", outcome
            kills.append(line[len("ready ") :] if kill_at else "random time")
            listed = list_checkpoints(Path(chain) / "checkpoints")
            assert len(listed) <= KEEP + 1  # the newest save may precede its prune
            for folder in listed:
                assert_same(folder, reference[folder.name])
            zygote.start(run_dir=chain, keep=KEEP, resume="", verify=True)
            assert zygote.next().split()[1:] == [p.name for p in listed]
            assert zygote.next() == "exit 0"
        zygote.start(run_dir=chain, keep=KEEP, resume="auto")
        assert zygote.next() == "exit 0"
    finally:
        zygote.close()
    print(f"{len(kills)} kills:", *kills, sep="\n  ")
    assert len(kills) == TRIALS, kills
    assert {k.split()[0] for k in kills} >= {"after", "before", "rmtree", "step", "random"}
    final = list_checkpoints(Path(chain) / "checkpoints")
    assert [p.name for p in final] == ["step_95", "step_96"]
    assert sorted(p.name for p in (Path(chain) / "checkpoints").iterdir()) == ["step_95", "step_96"]
    assert_same(final[-1], reference["step_96"])
