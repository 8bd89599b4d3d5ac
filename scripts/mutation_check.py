"""Mutation check: plant one bug at a time in a core formula of a scratch copy and see that the tests catch it.

    .venv/bin/python scripts/mutation_check.py            # all 11 mutations, the fast tests of each (~5 min)
    .venv/bin/python scripts/mutation_check.py welch fd    # some of them

Each mutation replaces one exact line fragment (it must occur exactly once, so a refactor that moves the
formula fails loudly here instead of silently testing nothing) in a copy of the working tree under a
temporary folder, then runs the tests that guard that formula, plus the doctests of the mutated module, with
``PYTHONPATH`` pointing at the copy. The working tree is never changed. A mutation is *killed* when pytest
fails (exit 1); any other exit code is an error of the check. Exit 0 only when every mutation is killed.

Last result (issue 18): 11/11 killed. "rank slicing" had survived (10/11): no test pinned which column of
the shared latent draw a rank keeps; tests/trainers/test_rank_latents.py now does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # file in the repository
    old: str  # exact fragment, once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments (files or folders)


MUTATIONS = (
    Mutation("mask rule", "xai_train/xaigan/rules.py", "(1 + alpha * mask.float())", "(1 + mask.float())",
             ("tests/xaigan",)),
    Mutation("normalisation", "xai_train/explain/mask.py", "((maps - low) / span)", "(maps / span)",
             ("tests/explain/test_explain_mask.py", "tests/xaigan")),
    Mutation("noise levels", "xai_train/diffusion/importance_schedule.py", "torch.sqrt(1 + s / lam)",
             "torch.sqrt(1 + s * lam)", ("tests/diffusion",)),
    Mutation("FD", "xai_train/metrics/frechet.py", "value - 2 * trace_sqrt_product", "value - trace_sqrt_product",
             ("tests/metrics",)),
    Mutation("selection", "xai_train/xaigan/selection.py", "d_fake.detach().reshape(-1) < 0",
             "d_fake.detach().reshape(-1) < 0.5", ("tests/xaigan",)),
    Mutation("pruning", "xai_train/checkpoint/manager.py", "step_folders(self.directory)[: -self.keep_last]",
             "step_folders(self.directory)[: -self.keep_last - 1]", ("tests/test_checkpoint.py",)),
    Mutation("Welch", "xai_train/ablation/power.py", "var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1)",
             "var_a**2 / n_a + var_b**2 / n_b", ("tests/ablation",)),
    Mutation("d-steps", "xai_train/trainers/gan.py", "for cycle in range(cfg.d_steps_per_g_step):",
             "for cycle in range(1):", ("tests/trainers",)),
    Mutation("noise schedule", "xai_train/diffusion/importance_schedule.py",
             "torch.sigmoid(self.sharpness * (fraction - self.midpoint))",
             "torch.sigmoid(self.sharpness * (self.midpoint - fraction))", ("tests/diffusion",)),
    Mutation("rank slicing", "xai_train/trainers/gan.py", "everyone[:, acc.process_index]", "everyone[:, 0]",
             ("tests/trainers",)),
    Mutation("reference fill", "xai_train/xaigan/reference.py", "values = torch.ones(", "values = torch.zeros(",
             ("tests/xaigan",)),
)  # fmt: skip


def copy_tree(destination: Path) -> None:
    """The tracked and untracked-not-ignored files of the working tree (as they are now)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run(mutation: Mutation, scratch: Path) -> tuple[str, float]:
    """``"killed"`` or ``"SURVIVED"`` (or raises), and the seconds the tests took."""
    path = scratch / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"error: mutation {mutation.name!r}: {mutation.old!r} occurs "
                         f"{original.count(mutation.old)} times in {mutation.path}, expected once")  # fmt: skip
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        environment = dict(os.environ, PYTHONPATH=str(scratch), OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow"]
        command += [*mutation.tests, mutation.path]
        start = time.monotonic()
        done = subprocess.run(command, cwd=scratch, env=environment, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - start
    finally:
        path.write_text(original)
    if done.returncode == 1:
        return "killed", seconds
    if done.returncode == 0:
        return "SURVIVED", seconds
    raise SystemExit(f"error: mutation {mutation.name!r}: pytest exit {done.returncode}\n{done.stdout[-2000:]}")


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or m.name.lower().replace(" ", "-") in argv or m.name in argv]
    if argv and not chosen:
        names = ", ".join(m.name.lower().replace(" ", "-") for m in MUTATIONS)
        print(f"error: no mutation named {' '.join(argv)}; choose from: {names}", file=sys.stderr)
        return 2
    killed = 0
    with tempfile.TemporaryDirectory(prefix="mutation_") as folder:
        scratch = Path(folder)
        copy_tree(scratch)
        for mutation in chosen:
            verdict, seconds = run(mutation, scratch)
            killed += verdict == "killed"
            change = f"{mutation.path}: {mutation.old!r} -> {mutation.new!r}"
            print(f"{mutation.name:15s} {verdict:9s} {seconds:6.1f} s  {change}", flush=True)
    print(f"{killed}/{len(chosen)} killed")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
