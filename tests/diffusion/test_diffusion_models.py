"""build_optimization: the LR schedule reads in optimizer steps whatever the process count."""

import math

import pytest
from torch import nn

from xai_train.diffusion.models import build_optimization

WARMUP, STEPS = 3, 10


def lrs_per_optimizer_step(num_processes: int, schedule: str) -> list[float]:
    """The LR at each optimizer step when, as Accelerate does, the prepared scheduler steps once per process."""
    optimizer, scheduler = build_optimization(
        nn.Linear(2, 2),
        lr=1.0,
        lr_scheduler=schedule,
        warmup_steps=WARMUP,
        max_steps=STEPS,
        num_processes=num_processes,
    )
    seen = []
    for _ in range(STEPS):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        for _ in range(num_processes):
            scheduler.step()
    return seen


def cosine_by_hand(step: int) -> float:
    if step < WARMUP:
        return step / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


@pytest.mark.parametrize("num_processes", [1, 2, 4])
def test_cosine_warmup_in_optimizer_steps(num_processes):
    expected = [cosine_by_hand(step) for step in range(STEPS)]
    assert lrs_per_optimizer_step(num_processes, "cosine") == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("schedule", ["linear", "constant_with_warmup"])
def test_other_schedules_do_not_depend_on_the_process_count(schedule):
    one = lrs_per_optimizer_step(1, schedule)
    assert one[1] == pytest.approx(1 / WARMUP) and one[WARMUP] == pytest.approx(1.0)
    assert lrs_per_optimizer_step(3, schedule) == pytest.approx(one, abs=1e-9)
