"""recipes/custom_loop.py keeps its promise: the marked lines add xAI-GAN, and without them it still runs."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "custom_loop.py"
MARK = "# New Code #"


def load(source: str, name: str):
    path = SCRIPT.with_name(f"_{name}.py")
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def test_marked_lines_are_few_and_complete():
    source = SCRIPT.read_text()
    marked = [line for line in source.splitlines() if line.rstrip().endswith(MARK)]
    assert 3 <= len(marked) <= 5, marked
    assert any("CallbackList(" in line for line in marked)
    assert any("on_generator_forward" in line for line in marked)


@pytest.mark.parametrize("strip", [False, True], ids=["with_xai", "plain_loop"])
def test_loop_runs_with_and_without_the_marked_lines(strip):
    source = SCRIPT.read_text()
    if strip:
        source = "\n".join(line for line in source.splitlines() if not line.rstrip().endswith(MARK))
    module = load(source, "custom_loop_plain" if strip else "custom_loop_xai")
    result = module.main(["--steps", "3", "--batch-size", "8", "--width", "8"])
    assert set(result) == {"d_loss", "g_loss"}
    assert all(value == value for value in result.values())  # finite, not NaN
