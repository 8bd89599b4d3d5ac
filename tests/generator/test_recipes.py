"""The three recipes on a tiny GAN run: clear errors, and (slow) the whole reports end to end."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from xai_train.config import save_config
from xai_train.config.common import DataConfig, RunConfig
from xai_train.config.gan import GANExperiment, GANModelConfig
from xai_train.generator.run import load_gan_run

ROOT = Path(__file__).resolve().parents[2]


def recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, trained_gan):
    """A run folder as recipes/train_gan.py leaves it, holding the session's tiny trained GAN."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    config = GANExperiment(
        run=RunConfig(name="tiny"),
        data=DataConfig(name="shapes", channels=1, num_samples=600),
        model=GANModelConfig(g_width=8, d_width=8),
    )
    save_config(config, run / "config.yaml")
    folder = run / "checkpoints" / "step_30"
    folder.mkdir(parents=True)
    G, D = trained_gan
    save_file(G.state_dict(), str(folder / "model.safetensors"))
    save_file(D.state_dict(), str(folder / "model_1.safetensors"))
    return run


def test_the_run_loads_with_its_weights(tiny_run, trained_gan):
    run = load_gan_run(tiny_run)
    z = torch.randn(3, 100)
    assert torch.equal(run.generator(z), trained_gan[0](z)) and run.folder.name == "step_30"


@pytest.mark.parametrize(
    ("script", "extra", "message"),
    [
        ("dissect", ["--layer", "upsample.7.act"], "no layer 'upsample.7.act'; layers with channel maps: project.conv"),
        ("correct_units", ["--layers", "to_image.act"], "through 'to_image.act' (Tanh)"),
        ("correct_units", ["--scorer", "classifier", "--scorer-checkpoint", "nope"], "nope.safetensors not found"),
        ("explore", ["--boundary-layer", "head"], "no layer 'head'"),
        (
            "correct_units",
            ["--layers", "upsample.0.act", "--k", "100"],
            "k must be a unit count in 1..16 for layer 'upsample.0.act' (16 units), got 100",
        ),
        ("correct_units", ["--layers", "upsample.0.act", "--ks", "1", "17"], "(16 units), got 17"),
    ],
)
def test_user_errors_are_caught_before_any_work(tiny_run, script, extra, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        recipe(script).main([str(tiny_run), *extra])


def test_a_user_error_exits_with_code_2(tmp_path, process_groups):
    done = process_groups.run(
        [sys.executable, str(ROOT / "recipes" / "dissect.py"), str(tmp_path)], timeout=600,
        capture_output=True, text=True, cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: '{tmp_path}' has no config.yaml; pass a GAN run folder such as runs/demo\n"


def test_correct_units_with_k_above_the_layer_exits_2_with_one_line(tiny_run, process_groups):
    done = process_groups.run(
        [sys.executable, str(ROOT / "recipes" / "correct_units.py"), str(tiny_run), "--layers", "upsample.0.act",
         "--k", "100"], timeout=600, capture_output=True, text=True, cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "error: k must be a unit count in 1..16 for layer 'upsample.0.act' (16 units), got 100\n"
    assert not (tiny_run / "correct").exists()  # nothing baked, nothing written


@pytest.mark.slow
def test_recipes_end_to_end(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_TRAIN_CACHE", str(tmp_path / "cache"))
    quick = ["--feature-steps", "5"]
    dissection = recipe("dissect").main(
        [str(tiny_run), "--layer", "upsample.0.act", "--num-samples", "64", "--causal-samples", "8",
         "--causal-units", "2", "--segmenter-steps", "5", "--out", str(tmp_path / "dissect")]
    )  # fmt: skip
    assert dissection["units"] == 16 and (tmp_path / "dissect" / "ranking.csv").read_text().count("\n") == 17
    summary = recipe("correct_units").main(
        [str(tiny_run), "--scorer", "d", "--layers", "project.act", "upsample.0.act", "--k", "2", "--ks", "1", "2",
         "--random-seeds", "1", "--num-samples", "64", "--out", str(tmp_path / "correct"), *quick]
    )  # fmt: skip
    assert summary["baked_minus_hooked"] < 1e-5
    baked = load_file(tmp_path / "correct" / "generator" / "model.safetensors")
    corrected = load_gan_run(tmp_path / "correct" / "generator").generator
    assert torch.equal(corrected.state_dict()["upsample.0.norm.weight"], baked["upsample.0.norm.weight"])
    program = torch.export.load(tmp_path / "correct" / "generator" / "generator.pt2").module()
    z = torch.randn(4, 100)
    assert torch.equal(program(z), corrected(z))
    sweep = (tmp_path / "correct" / "sweep.csv").read_text().splitlines()
    assert len(sweep) == 1 + 1 + 2 + 2  # header, k=0, top k=1,2, random k=1,2
    explored = recipe("explore").main(
        [str(tiny_run), "--num-queries", "2", "--num-samples", "6", "--steps", "5", "--out", str(tmp_path / "explore"),
         *quick]
    )  # fmt: skip
    assert explored["tree_acceptance"] == 1.0 and 0 <= explored["eps_acceptance"] <= 1
    assert json.loads((tmp_path / "explore" / "summary.json").read_text())["num_queries"] == 2
