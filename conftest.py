"""Root pytest setup: what is collected, and a clean Accelerate state after every docstring Example.

`setup.cfg` turns on `--doctest-modules` for `tests`, `xai_train` and `callbacks`. Recipes and scripts are
programs, not modules to import (they parse arguments and train on import of `__main__` only, but a
doctest collector would still import them), so they are never collected, even by `pytest .`.
"""

import pytest
from accelerate.state import AcceleratorState, GradientState, PartialState

collect_ignore = ["recipes", "scripts", "runs", "docs", "configs", ".venv"]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Examples that build an Accelerator leave its singleton state behind; reset it like tests/conftest.py does."""
    if isinstance(item, pytest.DoctestItem):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
