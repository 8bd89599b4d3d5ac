"""Thread policy: precedence of the flag, XAI_TRAIN_THREADS and OMP_NUM_THREADS; the recipes set the OpenMP
wait policy before anything imports torch."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch

from xai_train.cli import run_main
from xai_train.errors import UserError
from xai_train.threads import THREADS_ENV, choose_threads, configure_threads

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.parametrize(
    ("requested", "environ", "cpus", "threads", "source"),
    [
        (None, {"OMP_WAIT_POLICY": "PASSIVE"}, 2, 1, "default"),  # the 2-core laptop: a core for other jobs
        (None, {}, 1, 1, "default"),
        (None, {}, 7, 3, "default"),
        (None, {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}, 16, 3, "OMP_NUM_THREADS"),
        (None, {"OMP_NUM_THREADS": "4,2"}, 16, 4, "OMP_NUM_THREADS"),  # nested list: the outer team
        (None, {"OMP_NUM_THREADS": "junk"}, 16, 8, "default"),  # torch ignores it too
        (None, {THREADS_ENV: "5", "OMP_NUM_THREADS": "3"}, 16, 5, THREADS_ENV),
        (None, {THREADS_ENV: "auto", "OMP_NUM_THREADS": "3"}, 16, 8, "default"),
        ("6", {THREADS_ENV: "5", "OMP_NUM_THREADS": "3"}, 16, 6, "--threads"),
        ("auto", {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}, 16, 8, "default"),
        (2, {}, 16, 2, "--threads"),
    ],
)
def test_precedence(requested, environ, cpus, threads, source):
    choice = choose_threads(requested, environ=environ, cpus=cpus)
    assert (choice.threads, choice.source, choice.cpus) == (threads, source, cpus)


@pytest.mark.parametrize(
    ("requested", "environ", "where"), [("0", {}, "--threads"), (None, {THREADS_ENV: "two"}, THREADS_ENV)]
)
def test_bad_counts_are_user_errors_naming_the_setting(requested, environ, where):
    with pytest.raises(UserError, match=f"^{where} must be a whole number >= 1 or 'auto'"):
        choose_threads(requested, environ=environ, cpus=4)


def test_configure_sets_torch_and_writes_no_environment():
    before = torch.get_num_threads()
    try:
        environ = {"OMP_WAIT_POLICY": "ACTIVE"}
        choice = configure_threads(1, environ=environ)
        assert torch.get_num_threads() == 1 == choice.threads
        assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
        assert choice.describe().startswith("torch threads: 1 of ") and "--threads" in choice.describe()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "recipe",
    [
        "train_gan.py",
        "train_diffusion.py",
        "sample.py",
        "benchmark.py",
        "explain.py",
        "counterfactual.py",
        "dissect.py",
        "correct_units.py",
        "explore.py",
    ],
)
def test_recipes_set_the_wait_policy_before_importing_torch(recipe):
    """OpenMP reads OMP_WAIT_POLICY when torch loads it: the assignment must precede every import that can
    load torch (torch itself, xai_train, callbacks, accelerate, diffusers, captum, ...)."""
    body = ast.parse((RECIPES / recipe).read_text()).body
    position = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr) and "OMP_WAIT_POLICY" in ast.unparse(node) and "PASSIVE" in ast.unparse(node)
    )
    allowed_before = {"__future__", "os"}
    for node in body[:position]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert set(names) <= allowed_before, f"{recipe}: {names} imported before OMP_WAIT_POLICY is set"
    text = (RECIPES / recipe).read_text()
    assert "configure_threads(args.threads)" in text or "parse_run_arguments(" in text  # the latter calls it


@pytest.mark.parametrize("recipe", ["train_gan", "train_diffusion"])
def test_a_bad_threads_flag_is_one_error_line_and_exit_2(recipe, capsys):
    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}_threads", RECIPES / f"{recipe}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as stopped:
        run_main(module.main, ["--threads", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --threads must be a whole number >= 1 or 'auto'; got '0'"
