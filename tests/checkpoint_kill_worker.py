"""Zygote for tests/test_checkpoint_kill.py: imports the project once, then forks one process per request.

Each forked child is a real GAN training process (a tiny MLP GAN, dropout in D, EMA, a checkpoint every step)
that the test SIGKILLs. Forking keeps the ~5-10 s import out of every trial. The child announces the
moment chosen by the test and then blocks, so the kill lands exactly there:

    stdin  (one JSON request per line): {"run_dir": ..., "keep": 2, "resume": "auto",
                                          "kill_at": ["rmtree", 3] | null, "cap": ["step", 3] | null,
                                          "verify": false}
    stdout: "pid <pid>", then "ready <event>" when the kill moment is reached, then "exit <status>"

Events are the I/O steps of saving and pruning (each file written, each ``os.replace`` before and after,
each file unlinked by ``shutil.rmtree``) and each training step. ``cap`` blocks silently at an event: a kill
at a random time then lands before it, so a trial never runs far whatever the machine's speed. With
``verify`` the child instead loads
every listed checkpoint through the trainer and prints "verified <names>".
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import accelerate.utils.other
import torch
import torch.utils.tensorboard  # noqa: F401  (imported once here, not in every child)
from einops import rearrange
from torch import nn

from xai_train.checkpoint import list_checkpoints
from xai_train.config.gan import GANTrainConfig
from xai_train.trainers import GANTrainer

MAX_STEPS = 96  # far more than 30 trials can use up: every trial is bounded in steps (see ``cap``)


class TinyGenerator(nn.Module):
    latent_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(self.latent_dim, 32), nn.ReLU(), nn.Linear(32, 64), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return rearrange(self.net(z), "b (c h w) -> b c h w", c=1, h=8)


class TinyDiscriminator(nn.Module):
    """Dropout makes the run depend on the global torch RNG, so a lost RNG state shows."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_trainer(run_dir: str, keep: int, resume: str) -> GANTrainer:
    torch.manual_seed(0)
    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(
        batch_size=8,
        max_steps=MAX_STEPS,
        log_every=4,
        sample_every=0,
        checkpoint_every=1,
        keep_checkpoints=keep,
        ema_decay=0.9,
        num_samples=4,
    )
    models = TinyGenerator(), TinyDiscriminator()
    return GANTrainer(*models, images, config, run_dir=run_dir, resume=resume, seed=0, cpu=True)


def instrument(kill_at: list | None, cap: list | None = None) -> None:
    """Wraps the I/O functions so that each call is an event; blocks at the chosen one (or, silently, at ``cap``)."""
    pattern, nth = kill_at if kill_at else (None, 0)
    cap_pattern, cap_nth = cap if cap else (None, 0)
    seen = {"count": 0, "cap": 0}

    def event(description: str) -> None:
        if pattern is not None and description.startswith(pattern):
            seen["count"] += 1
            if seen["count"] == nth:
                print(f"ready {description}", flush=True)
                time.sleep(600)  # the test kills it long before
        if cap_pattern is not None and description.startswith(cap_pattern):
            seen["cap"] += 1
            if seen["cap"] == cap_nth:
                time.sleep(600)

    def wrap(function, name):
        def wrapped(*args, **kwargs):
            what = Path(args[1]).name if name == "save" else f"{Path(args[0]).name}->{Path(args[1]).name}"
            if name == "replace":
                event(f"before replace {what}")
            result = function(*args, **kwargs)
            event(f"after {name} {what}")
            return result

        return wrapped

    os.replace = wrap(os.replace, "replace")
    torch.save = wrap(torch.save, "save")
    accelerate.utils.other.safe_save_file = wrap(accelerate.utils.other.safe_save_file, "save")
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, ignore_errors=False, **kwargs):
        # File by file, with an event between: a kill here leaves a half-deleted folder.
        path = Path(path)
        if path.is_dir():
            for file in sorted(path.iterdir()):
                if file.is_file():
                    file.unlink()
                    event(f"rmtree {path.name} {file.name}")
        real_rmtree(path, ignore_errors=ignore_errors, **kwargs)

    shutil.rmtree = slow_rmtree
    train_step = GANTrainer.train_step

    def step(self):
        event(f"step {self.state.step + 1}")
        return train_step(self)

    GANTrainer.train_step = step


def child(request: dict) -> None:
    print(f"pid {os.getpid()}", flush=True)
    if request.get("verify"):
        trainer = make_trainer(request["run_dir"], request["keep"], resume="")
        listed = list_checkpoints(Path(request["run_dir"]) / "checkpoints")
        for folder in listed:
            state = trainer.checkpoints.load(folder)
            assert state["step"] == int(folder.name[5:]), (folder, state["step"])
        print("verified " + " ".join(p.name for p in listed), flush=True)
        return
    instrument(request.get("kill_at"), request.get("cap"))
    trainer = make_trainer(request["run_dir"], request["keep"], request["resume"])
    trainer.train()


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(request)
            except BaseException as error:  # report, then leave without running the parent's cleanup
                print(f"error {type(error).__name__}: {error}".replace("\n", " "), flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()
