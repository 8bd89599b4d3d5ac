"""Benchmarks in one place: timing, memory traces, contention, and the GAN and diffusion arms.

``recipes/benchmark.py`` is the command line (``--suite gan|diffusion|contention``); these are its parts:

- :mod:`~xai_train.benchmarks.timing`: interleaved step timing and Markdown tables;
- :mod:`~xai_train.benchmarks.memory`: resident memory sampled through a run, and its slope;
- :mod:`~xai_train.benchmarks.contention`: a step beside CPU-burning processes vs an idle one, per thread policy;
- :mod:`~xai_train.benchmarks.gan`, :mod:`~xai_train.benchmarks.diffusion`: one trainer per arm.

Callbacks are passed in by the caller: this package, like all of ``xai_train``, never imports ``callbacks``.
"""

from xai_train.benchmarks.contention import (
    ContentionResult,
    compare_policies,
    cpu_burners,
    default_policies,
    measure_contention,
)
from xai_train.benchmarks.diffusion import (
    make_diffusion_arm,
    refill_seconds_per_step,
    sampling_seconds_per_image,
    step_fn,
)
from xai_train.benchmarks.gan import make_gan_arm, one_step
from xai_train.benchmarks.memory import RSSTrace, rss_mb, slope_per_100, trace_rss
from xai_train.benchmarks.timing import ArmTiming, markdown_table, synchronize, time_interleaved

__all__ = [
    "ArmTiming",
    "ContentionResult",
    "RSSTrace",
    "compare_policies",
    "cpu_burners",
    "default_policies",
    "make_diffusion_arm",
    "make_gan_arm",
    "markdown_table",
    "measure_contention",
    "one_step",
    "refill_seconds_per_step",
    "rss_mb",
    "sampling_seconds_per_image",
    "slope_per_100",
    "step_fn",
    "synchronize",
    "time_interleaved",
    "trace_rss",
]
