"""recipes/explain.py end to end on a tiny GAN run and on a saved classifier; a bad checkpoint is a clear error."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xai_train.checkpoint import CheckpointError
from xai_train.config import ConfigError, load_config, save_config
from xai_train.config.gan import GANExperiment
from xai_train.metrics.classifier import FeatureClassifier
from xai_train.models import build_gan

ROOT = Path(__file__).resolve().parents[2]


def recipe():
    spec = importlib.util.spec_from_file_location("explain_recipe", ROOT / "recipes" / "explain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_run(tmp_path: Path) -> Path:
    """A run folder like the trainer writes: config.yaml and checkpoints/step_2 with G and D weights."""
    overrides = ["data.name=shapes", "data.num_samples=64", "model.g_width=8", "model.d_width=8", "run.name=tiny"]
    config = load_config(GANExperiment, None, overrides)
    run_dir = tmp_path / "tiny"
    save_config(config, run_dir / "config.yaml")
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    (run_dir / "checkpoints" / "step_2").mkdir(parents=True)
    save_file(generator.state_dict(), run_dir / "checkpoints" / "step_2" / "model.safetensors")
    save_file(discriminator.state_dict(), run_dir / "checkpoints" / "step_2" / "model_1.safetensors")
    return run_dir


@pytest.mark.slow
def test_gan_run_report_has_the_grid_the_table_and_timings(tmp_path):
    run_dir = tiny_run(tmp_path)
    out = recipe().main([str(run_dir), "--methods", "gradcam,randomcam", "--num-images", "4", "--grid-images", "2"])
    assert out == run_dir / "explain"
    assert (out / "grid.png").stat().st_size > 0 and (out / "timings.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    rows = {row["method"]: row for row in csv.DictReader((out / "metrics.csv").open())}
    assert sorted(rows) == ["gradcam", "randomcam"]
    assert {"deletion", "deletion_random", "pointing_game", "chance", "cascade_final", "infidelity"} <= set(
        rows["gradcam"]
    )  # shapes has masks: localisation columns are there
    assert float(rows["randomcam"]["cascade_final"]) == pytest.approx(1.0)  # ignores the model: fails the check
    assert "| gradcam |" in (out / "metrics.md").read_text()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # torch.jit is deprecated
def test_safetensors_classifier_and_an_unreadable_checkpoint(tmp_path, process_groups):
    torch.manual_seed(0)
    weights = tmp_path / "clf.safetensors"
    save_file(FeatureClassifier(1, 3, width=4, num_features=8).state_dict(), weights)
    out = recipe().main(
        [
            "--classifier",
            str(weights),
            "--data",
            "shapes",
            "--methods",
            "layercam",
            "--num-images",
            "4",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["method"] for r in rows] == ["layercam"]
    galore = list(csv.DictReader((out / "galore" / "metrics.csv").open()))  # shapes has masks
    assert [r["method"] for r in galore] == ["attributive", "counterfactual", "deliberative"]
    assert all(0 <= float(r["energy_in_mask"]) <= 1 for r in galore) and (out / "galore.png").is_file()
    # TorchScript: compiled layers call no forward hooks, so only the class-logit gradients run, and CAMs are a
    # clear error rather than an empty map.
    traced = torch.jit.trace(FeatureClassifier(1, 3, width=4, num_features=8).eval(), torch.zeros(2, 1, 32, 32))
    torch.jit.save(traced, tmp_path / "clf.pt")
    common = ["--classifier", str(tmp_path / "clf.pt"), "--data", "shapes", "--num-images", "4"]
    out = recipe().main([*common, "--methods", "all", "--out", str(tmp_path / "ts")])
    assert [r["method"] for r in csv.DictReader((out / "metrics.csv").open())] == ["saliency"]
    with pytest.raises(ConfigError, match="TorchScript"):
        recipe().main([*common, "--methods", "gradcam", "--out", str(tmp_path / "ts")])
    run_dir = tiny_run(tmp_path)
    (run_dir / "checkpoints" / "step_2" / "model_1.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load"):
        recipe().main([str(run_dir), "--methods", "gradcam", "--num-images", "4"])
    result = process_groups.run(
        [sys.executable, str(ROOT / "recipes" / "explain.py"), str(run_dir), "--methods", "gradcam"],
        timeout=900,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2 and result.stderr.strip().startswith("error: cannot load")
