"""RSS traces: a planted leak shows as its slope, a step that frees what it allocates does not."""

from __future__ import annotations

import mmap

import pytest

from xai_train.benchmarks import slope_per_100, trace_rss

MIB = 2**20


def test_slope_is_the_least_squares_fit():
    # y = 50 + 0.3·x plus noise that sums to zero and is orthogonal to x: the fit is exactly 0.3 per step.
    steps = [0, 10, 20, 30, 40]
    values = [50 + 0.3 * x + e for x, e in zip(steps, [1, -2, 2, -2, 1], strict=True)]
    assert slope_per_100(steps, values) == pytest.approx(30.0)
    assert slope_per_100([0], [5.0]) == 0.0
    assert slope_per_100([3, 3], [1.0, 2.0]) == 0.0


def resident_block() -> mmap.mmap:
    """2 MiB of fresh anonymous pages, each touched so it is resident. mmap, not bytes: malloc would reuse
    pages freed earlier in this process (already resident), and the measured growth would fall short."""
    block = mmap.mmap(-1, 2 * MIB)
    for offset in range(0, 2 * MIB, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_a_real_leak_is_found_and_a_freeing_step_is_not():
    kept = []

    def leak() -> None:
        kept.append(resident_block())  # 2 MiB per step stays resident

    def no_leak() -> None:
        resident_block().close()  # allocated, touched and returned to the system

    leaking = trace_rss(leak, 30, every=5)
    flat = trace_rss(no_leak, 30, every=5)
    for block in kept:
        block.close()
    assert leaking.steps == [0, 5, 10, 15, 20, 25, 30]
    assert leaking.slope_mb_per_100_steps == pytest.approx(200.0, rel=0.15)
    assert abs(flat.slope_mb_per_100_steps) < 20.0
    assert leaking.end - leaking.start == pytest.approx(60.0, rel=0.2)


def test_the_last_step_is_always_sampled_and_bad_arguments_are_refused():
    trace = trace_rss(lambda: None, 7, every=5, measure=lambda: 1.0)
    assert trace.steps == [0, 5, 7] and trace.peak == 1.0
    with pytest.raises(ValueError, match="steps >= 1 and every >= 1"):
        trace_rss(lambda: None, 0)
