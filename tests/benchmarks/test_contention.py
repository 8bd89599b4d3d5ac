"""Contention measurement: burners really burn and really stop; the ratio is contended / idle."""

from __future__ import annotations

import os
import time

import pytest

from xai_train.benchmarks import ContentionResult, cpu_burners, measure_contention
from xai_train.benchmarks.contention import compare_policies, default_policies


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_burners_use_cpu_and_are_gone_afterwards():
    with cpu_burners(1) as burners:
        time.sleep(1.0)
        used = cpu_seconds(burners[0].pid)
    assert used > 0.05  # even on a crowded machine a busy loop gets some of a second
    assert [p.returncode for p in burners] != [None]  # killed and reaped
    assert not os.path.exists(f"/proc/{burners[0].pid}/stat") or burners[0].poll() is not None


def test_ratio_is_contended_median_over_idle_median():
    result = ContentionResult(idle=[1.0, 3.0, 2.0], contended=[4.0, 5.0, 9.0], burners=1, threads=2, wait_policy=None)
    assert (result.idle_median, result.contended_median, result.ratio) == (2.0, 5.0, 2.5)


def test_measure_alternates_blocks_and_counts_steps():
    calls = []
    result = measure_contention(lambda: calls.append(1), steps=3, rounds=2, warmup=1, burners=0)
    assert len(calls) == 1 + 2 * 2 * 3
    assert len(result.idle) == len(result.contended) == 6
    with pytest.raises(ValueError, match="steps, rounds >= 1"):
        measure_contention(lambda: None, steps=0)


@pytest.mark.slow
def test_each_policy_runs_in_a_fresh_process_with_its_settings():
    """The child sees the policy's environment (not the parent's OMP_NUM_THREADS) and applies the project's rule."""
    chosen = {"project default": default_policies(cpus=2)["project default"]}
    results = compare_policies(chosen, steps=1, rounds=1, burners=0, timeout=600)
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert results["project default"].threads == expected
    assert results["project default"].wait_policy == "PASSIVE"
