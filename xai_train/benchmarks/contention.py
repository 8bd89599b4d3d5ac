"""A step beside a CPU-burning process vs an idle one: does the thread policy survive other load?

:func:`measure_contention` times blocks of steps alternately without and with ``burners`` busy-looping
processes beside them, so the ratio contended / idle comes from one run. A thread policy is fixed when a
process starts (``OMP_WAIT_POLICY`` is read at ``import torch``), so :func:`compare_policies` runs each
policy in a fresh process (``python -m xai_train.benchmarks.contention``) on the demo's model: a DCGAN of
width 32 on 32×32 digits, batch 64 (``configs/gan/demo.yaml`` without the free-saliency callback, which
costs nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import torch

from xai_train.threads import THREADS_ENV, available_cpus, configure_threads

BURN = "while True: pass"
POLICY_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", THREADS_ENV)


@contextlib.contextmanager
def cpu_burners(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` busy-looping Python processes (one core each) for the duration of the block.

    Args:
        count: processes to start (0 = none).

    Yields:
        The processes; they are killed and reaped when the block ends, also on an exception.

    Example:
        >>> with cpu_burners(1) as burners:
        ...     alive = [p.poll() is None for p in burners]
        >>> alive, [p.poll() is None for p in burners]
        ([True], [False])
    """
    processes = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]
    try:
        time.sleep(0.2 if count else 0.0)  # let them reach the scheduler before the first timed step
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


@dataclass
class ContentionResult:
    """Step times (seconds) without and with the burners, and the setting they ran under.

    Attributes:
        idle: step times with no burner.
        contended: step times beside ``burners`` busy processes.
        burners: busy processes beside the contended steps.
        threads: torch intra-op threads.
        wait_policy: ``OMP_WAIT_POLICY`` at start (``None`` = OpenMP's default, which spins a while).
    """

    idle: list[float]
    contended: list[float]
    burners: int
    threads: int
    wait_policy: str | None

    @property
    def idle_median(self) -> float:
        return statistics.median(self.idle)

    @property
    def contended_median(self) -> float:
        return statistics.median(self.contended)

    @property
    def ratio(self) -> float:
        """Median contended step / median idle step (the target is <= ~2)."""
        return self.contended_median / self.idle_median


def measure_contention(
    step: Callable[[], object],
    *,
    steps: int = 8,
    rounds: int = 2,
    warmup: int = 2,
    burners: int = 1,
) -> ContentionResult:
    """Times ``rounds`` × (``steps`` idle steps, then ``steps`` steps beside ``burners`` busy processes).

    Args:
        step: one training step.
        steps: steps per block.
        rounds: idle/contended block pairs (alternating, so a slow phase of the machine hits both).
        warmup: untimed steps first.
        burners: busy processes during the contended blocks.

    Returns:
        The step times and setting; ``result.ratio`` is contended / idle.

    Example:
        >>> result = measure_contention(lambda: sum(range(1000)), steps=2, rounds=1, warmup=0, burners=0)
        >>> len(result.idle), len(result.contended), result.burners
        (2, 2, 0)
    """
    if min(steps, rounds) < 1 or min(warmup, burners) < 0:
        raise ValueError(
            f"measure_contention needs steps, rounds >= 1 and warmup, burners >= 0; got steps={steps}, "
            f"rounds={rounds}, warmup={warmup}, burners={burners}"
        )

    def block() -> list[float]:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return times

    for _ in range(warmup):
        step()
    idle, contended = [], []
    for _ in range(rounds):
        idle += block()
        with cpu_burners(burners):
            contended += block()
    policy = os.environ.get("OMP_WAIT_POLICY")
    return ContentionResult(idle, contended, burners, torch.get_num_threads(), policy)


def default_policies(cpus: int | None = None) -> dict[str, dict[str, str]]:
    """The thread policies worth comparing, as environment settings at process start.

    ``project default`` is what a recipe does: ``OMP_WAIT_POLICY=PASSIVE`` before torch loads, then
    :func:`xai_train.threads.configure_threads` (half the CPUs, at least one thread).

    Args:
        cpus: CPUs available (default: this process's).

    Returns:
        name → variables to set (every variable of :data:`POLICY_VARIABLES` not named is unset).

    Example:
        >>> sorted(default_policies(cpus=4))
        ['1 thread', '4 threads, OpenMP default wait', '4 threads, passive wait', 'project default']
    """
    cpus = available_cpus() if cpus is None else cpus
    return {
        "project default": {"OMP_WAIT_POLICY": "PASSIVE"},
        "1 thread": {"OMP_NUM_THREADS": "1"},
        f"{cpus} threads, OpenMP default wait": {"OMP_NUM_THREADS": str(cpus)},
        f"{cpus} threads, passive wait": {"OMP_NUM_THREADS": str(cpus), "OMP_WAIT_POLICY": "PASSIVE"},
    }


def policy_environment(settings: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any thread variable, plus ``settings``.

    Args:
        settings: the policy's variables.
        base: the environment to start from.

    Returns:
        The child's environment.

    Example:
        >>> policy_environment({"OMP_NUM_THREADS": "1"}, {"OMP_WAIT_POLICY": "ACTIVE", "HOME": "/h"})
        {'HOME': '/h', 'OMP_NUM_THREADS': '1'}
    """
    base = os.environ if base is None else base
    environment = {key: value for key, value in base.items() if key not in POLICY_VARIABLES}
    return environment | dict(settings)


def compare_policies(
    policies: Mapping[str, Mapping[str, str]],
    *,
    steps: int = 8,
    rounds: int = 2,
    burners: int = 1,
    timeout: float = 900,
    progress: Callable[[str], None] | None = None,
) -> dict[str, ContentionResult]:
    """Runs :func:`measure_contention` on the demo model in a fresh process per policy.

    Args:
        policies: name → environment settings (see :func:`default_policies`).
        steps: steps per block.
        rounds: idle/contended block pairs.
        burners: busy processes beside the contended blocks.
        timeout: seconds per policy before the child is stopped (a collapsing policy can be very slow).
        progress: called with a line per finished policy.

    Returns:
        name → result.
    """
    results = {}
    for name, settings in policies.items():
        command = [sys.executable, "-m", "xai_train.benchmarks.contention", "--steps", str(steps)]
        command += ["--rounds", str(rounds), "--burners", str(burners)]
        done = subprocess.run(
            command, env=policy_environment(settings), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"contention child for policy {name!r} failed:\n{done.stderr[-2000:]}")
        results[name] = ContentionResult(**json.loads(done.stdout.strip().splitlines()[-1]))
        if progress is not None:
            result = results[name]
            progress(f"{name}: idle {result.idle_median:.3f} s, contended {result.contended_median:.3f} s")
    return results


def demo_step(image_size: int = 32, batch_size: int = 64, width: int = 32) -> Callable[[], None]:
    """One step of the demo's DCGAN (vanilla) on the embedded digits.

    Args:
        image_size: image side.
        batch_size: batch per step.
        width: DCGAN base width of G and D.

    Returns:
        A callable running one step.
    """
    from xai_train.benchmarks.gan import make_gan_arm, one_step
    from xai_train.config.gan import GANTrainConfig
    from xai_train.data import build_dataset

    images = build_dataset("digits", image_size=image_size).images
    options = {"g_width": width, "d_width": width}
    arm = make_gan_arm("dcgan", images, GANTrainConfig(batch_size=batch_size), model_options=options, cpu=True)
    return one_step(arm)


def main(argv: list[str] | None = None) -> None:
    """Child entry point: the project's thread policy, the demo step, one JSON line on stdout."""
    parser = argparse.ArgumentParser(description="one contention measurement (see compare_policies)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burners", type=int, default=1)
    args = parser.parse_args(argv)
    wait_policy = os.environ.get("OMP_WAIT_POLICY")  # the one OpenMP read at import (configure_threads sets it)
    configure_threads()
    result = measure_contention(demo_step(), steps=args.steps, rounds=args.rounds, burners=args.burners)
    result.wait_policy = wait_policy
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
