"""recipes/benchmark.py --suite gan: one row per arm, the baseline count named, an RSS trace per arm."""

from __future__ import annotations

import importlib.util
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "benchmark.py"


def test_gan_suite_writes_timing_and_memory_tables(tmp_path):
    spec = importlib.util.spec_from_file_location("recipe_benchmark_test", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    markdown = tmp_path / "gan.md"
    argv = ["--arch", "dcgan", "--width", "8", "--batch-sizes", "8", "--methods", "grad", "deeplift_shap"]
    argv += ["--shap-baselines", "3", "--steps", "1", "--warmup", "1", "--memory-steps", "4", "--memory-every", "2"]
    text = recipe.main([*argv, "--cpu", "--threads", "1", "--markdown", str(markdown)])
    assert markdown.read_text() == text + "\n"
    timing, memory = text.split("Resident memory")
    for arm in ("vanilla", "grad", "deeplift_shap (3 baselines)"):
        assert timing.count(f"| dcgan | 8 | {arm} |") == 1
        # steps 4, sampled at 0, 2, 4: three samples per arm
        assert memory.count(f"| dcgan | 8 | {arm} | 4 | 3 |") == 1
    assert "slope MiB/100 steps" in memory
    assert "| vanilla | " in timing and "| 1.00x |" in timing
