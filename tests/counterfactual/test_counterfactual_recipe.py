"""recipes/counterfactual.py on a tiny GAN run and a tiny classifier written by the test (no cached models)."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xai_train.cli import run_main
from xai_train.config import save_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.config.gan import GANExperiment
from xai_train.metrics.classifier import FeatureClassifier
from xai_train.models import build_gan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe_counterfactual", REPO / "recipes" / "counterfactual.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def gan_run(tmp_path):
    config = GANExperiment()  # the defaults: digits, 32×32, DCGAN
    model, data = config.model, config.data
    torch.manual_seed(0)
    generator, discriminator = build_gan(
        model.arch, image_size=data.image_size, channels=data.channels, g_width=8, d_width=8
    )
    run = tmp_path / "run"
    save_config(config, run / "config.yaml")
    text = (run / "config.yaml").read_text().replace("g_width: 64", "g_width: 8").replace("d_width: 64", "d_width: 8")
    (run / "config.yaml").write_text(text)
    folder = run / "checkpoints" / "step_1"
    folder.mkdir(parents=True)
    save_file(generator.state_dict(), str(folder / "model.safetensors"))
    save_file(discriminator.state_dict(), str(folder / "model_1.safetensors"))
    (folder / "checkpoint.json").write_text("{}")  # the checkpoint manager's "complete" marker
    return run


@pytest.fixture()
def classifier_file(tmp_path):
    torch.manual_seed(0)
    model = FeatureClassifier(1, 10, width=4, num_features=8).eval()
    path = tmp_path / "clf.safetensors"
    save_file(model.state_dict(), str(path))
    meta = {"channels": 1, "image_size": 32, "num_classes": 10, "recipe": {"width": 4, "num_features": 8}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def _error(recipe, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_main(recipe.main, argv, user_errors=(FileNotFoundError,))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_inputs_are_one_line_errors(recipe, gan_run, classifier_file, tmp_path, capsys):
    base = ["--generator", str(gan_run), "--method", "manifold", "--num-images", "2", "--out", str(tmp_path / "o")]
    assert "unknown target class 12" in _error(
        recipe, ["--classifier", str(classifier_file), *base, "--target", "12"], capsys
    )
    assert "choose digits, shapes" in _error(recipe, ["--classifier", "imagenet", *base], capsys)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    broken.with_suffix(".json").write_text(json.dumps({"channels": 1, "num_classes": 10, "recipe": {}}))
    assert "does not load" in _error(recipe, ["--classifier", str(broken), *base], capsys)
    diffusion = tmp_path / "ddpm"
    save_config(DiffusionExperiment(), diffusion / "config.yaml")  # a diffusion run that was never exported
    argv = ["--classifier", str(classifier_file), "--generator", str(diffusion), "--method", "manifold"]
    assert "holds no exported pipeline" in _error(recipe, argv, capsys)
    argv = ["--classifier", str(classifier_file), "--generator", str(diffusion), "--method", "attfind"]
    assert "needs a GAN run" in _error(recipe, argv, capsys)
    argv = ["--classifier", str(classifier_file), "--generator", "flow", "--method", "ganmex"]
    assert "needs a GAN run" in _error(recipe, argv, capsys)
    argv = ["--classifier", str(classifier_file), *base[:2], "--method", "attfind", "--layer", "nope"]
    assert "is not a module of the generator" in _error(recipe, argv, capsys)


@pytest.mark.slow
def test_three_methods_write_their_reports(recipe, gan_run, classifier_file, tmp_path):
    common = ["--classifier", str(classifier_file), "--generator", str(gan_run), "--num-images", "4", "--steps", "5"]
    for i, (method, extra) in enumerate(
        (
            ("manifold", ["--inversion-steps", "5", "--adversarial-steps", "5"]),
            ("ganmex", ["--inversion-steps", "5"]),
            ("ganmex", ["--translator-steps", "2"]),
            ("attfind", ["--top-k", "2", "--target", "3"]),
        )
    ):
        out = tmp_path / f"{i}_{method}"
        recipe.main([*common, "--method", method, "--out", str(out), *extra])
        rows = list(csv.DictReader((out / "summary.csv").open()))
        assert rows and any((out / "tensorboard").iterdir())
        pngs = sorted(p.name for p in out.glob("*.png"))
        if method == "manifold":
            assert [r["method"] for r in rows] == ["manifold", "adversarial"] and pngs == ["panel.png"]
        elif method == "ganmex":
            assert [r["baseline"] for r in rows] == ["zero", "blur", "mean", "ganmex"] and pngs == ["panel.png"]
        else:
            assert [int(r["rank"]) for r in rows] == [0, 1] and {r["class"] for r in rows} == {"3"}
            assert pngs == ["attfind_class3_rank0.png", "attfind_class3_rank1.png"]


@pytest.mark.slow
def test_manifold_counterfactuals_with_a_diffusion_run(recipe, classifier_file, tmp_path, make_unet):
    from diffusers import DDPMScheduler

    from xai_train.diffusion.pipeline import export_pipeline

    run = tmp_path / "ddpm"
    save_config(DiffusionExperiment(), run / "config.yaml")  # digits, 32×32, ε-prediction
    unet = make_unet(size=32, widths=(8, 16), groups=4)
    export_pipeline(run / "pipeline", unet, DDPMScheduler(num_train_timesteps=100))
    out = tmp_path / "out"
    argv = ["--classifier", str(classifier_file), "--generator", str(run), "--method", "manifold", "--num-images", "2"]
    recipe.main([*argv, "--steps", "3", "--ddim-steps", "2", "--adversarial-steps", "2", "--out", str(out)])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["method"] for r in rows] == ["manifold", "adversarial"] and (out / "panel.png").is_file()
