"""scripts/mutation_check.py stays pointed at real code: every planted fragment occurs exactly once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutation_replaces_one_existing_fragment_and_names_existing_tests():
    script = load_script()
    assert len(script.MUTATIONS) == 11
    for mutation in script.MUTATIONS:
        text = (REPO / mutation.path).read_text()
        assert text.count(mutation.old) == 1, mutation.name
        assert mutation.new != mutation.old and mutation.new not in text, mutation.name
        assert all((REPO / test).exists() for test in mutation.tests), mutation.name
    assert "tests/trainers" in next(m for m in script.MUTATIONS if m.name == "rank slicing").tests
