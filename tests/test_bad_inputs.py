"""Every bad command-line input of issue 8 §1 ends in one clear line and exit 2, before any training.

CLI cases run the recipes' ``main`` in this process through ``xai_train.cli.run_main`` (the same code path
as ``python recipes/<name>.py ...``) with the trainers replaced by a stub that fails the test if reached,
so every case is proven to stop before the first step. A handful run as real subprocesses as well. The API
side is ``tests/test_bad_inputs_api.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xai_train.cli import run_main
from xai_train.config import ConfigError, load_config
from xai_train.config.diffusion import DiffusionExperiment
from xai_train.config.gan import GANExperiment

REPO = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NoTraining:
    """Stands in for a trainer: reaching it means a bad input was not caught before training."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("a bad input reached the trainer")


@pytest.fixture(scope="module")
def recipes():
    modules = {
        name: load_recipe(name)
        for name in ("train_gan", "train_diffusion", "sample", "ablate", "custom_loop", "evaluate")
    }
    modules["train_gan"].GANTrainer = NoTraining
    modules["train_diffusion"].DiffusionTrainer = NoTraining
    return modules


def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "latin1.yaml": "run:\n  name: caf\xe9\n".encode("latin-1"),
        "binary.yaml": bytes(range(256)),
        "nul.yaml": b"run:\n  name: x\x00\n",
        "list.yaml": b"- 1\n- 2\n",
        "broken.yaml": b"train: {max_steps: [\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "diffusion_run").mkdir(exist_ok=True)
    (tmp_path / "diffusion_run" / "config.yaml").write_text("unet: {}\n")
    return {name: tmp_path / name for name in files}


# (recipe, arguments, fragments the one-line message must contain: the key, and what would be right)
CLI_CASES = [
    ("train_gan", ["xai.method=foo"], ["xai.method='foo'", "choose one of: grad, saliency"]),
    ("train_gan", ["xai.preset=paper"], ["xai.preset='paper'", "reference"]),
    (
        "train_gan",
        ["xai.method=integrated_gradients", "xai.explainer_options={n_step: 4}"],
        ["xai.explainer_options", "n_step", "n_steps"],
    ),
    ("train_gan", ["xai.explainer_options={abs: true}"], ["xai.explainer_options", "'grad' takes no"]),
    ("train_gan", ["xai.every_n_steps=0"], ["xai.every_n_steps=0", ">= 1"]),
    ("train_gan", ["xai.start_step=-1"], ["xai.start_step=-1", ">= 0"]),
    ("train_gan", ["xai.alpha=-3"], ["xai.alpha=-3.0", "alpha >= -1", "allow_sign_flip=true"]),
    ("train_gan", ["xai.alpha=.nan"], ["xai.alpha=nan", "finite"]),
    ("train_gan", ["xai.preset=reference", "xai.method=grad"], ["xai.method", "saliency, deeplift_shap, lime"]),
    ("train_gan", ["xai.preset=reference", "xai.method=saliency", "xai.rule=product"], ["xai.rule='product'"]),
    ("train_gan", ["xai.blur_sigma=-1"], ["xai.blur_sigma=-1.0", ">= 0"]),
    ("train_gan", ["data.image_size=48"], ["data.image_size=48", "32 or 64"]),
    ("train_gan", ["model.arch=paper_mlp", "data.image_size=64"], ["data.image_size=64", "'paper_mlp'", "32"]),
    ("train_gan", ["model.arch=paper_mlp", "data.channels=3"], ["data.channels=3", "'paper_mlp'"]),
    ("train_gan", ["data.channels=2"], ["data.channels=2", "1 (grey) or 3 (RGB)"]),
    ("train_gan", ["data.fraction=0"], ["data.fraction=0.0", "(0, 1]"]),
    ("train_gan", ["train.d_steps_per_g_step=0"], ["train.d_steps_per_g_step=0", ">= 1"]),
    ("train_gan", ["train.grad_accum_steps=0"], ["train.grad_accum_steps=0", ">= 1"]),
    ("train_gan", ["train.batch_size=0"], ["train.batch_size=0", ">= 1"]),
    ("train_gan", ["train.lr_g=-1"], ["train.lr_g=-1.0", "> 0"]),
    ("train_gan", ["train.lr_d=.inf"], ["train.lr_d=inf", "finite"]),
    ("train_gan", ["train.max_steps=-3"], ["train.max_steps=-3", ">= 1"]),
    ("train_gan", ["train.betas=[0.5, 1.5]"], ["train.betas=[0.5, 1.5]", "[0, 1)"]),
    ("train_gan", ["train.real_label=2"], ["train.real_label=2.0", "[0, 1]"]),
    ("train_gan", ["train.ema_decay=1"], ["train.ema_decay=1.0", "[0, 1)"]),
    ("train_gan", ["train.log_every=0"], ["train.log_every=0", ">= 1"]),
    ("train_gan", ["model.dropout=1"], ["model.dropout=1.0", "[0, 1)"]),
    ("train_gan", ["model.latent_dim=0"], ["model.latent_dim=0", ">= 1"]),
    ("train_gan", ["eval.metrics=[bogus]"], ["eval.metrics=['bogus']", "unknown 'bogus'", "fd, kid, pr"]),
    ("train_gan", ["eval.metrics=[]"], ["eval.metrics=[]", "empty"]),
    ("train_gan", ["eval.metrics=[fd]", "eval.monitor=kid"], ["eval.monitor='kid'", "['fd']"]),
    ("train_gan", ["run.seed=-1"], ["run.seed=-1", ">= 0"]),
    ("train_gan", ["data.name=mnist"], ["data.root=''", "set data.root=<folder with the MNIST IDX files"]),
    ("train_gan", ["data.name=foo"], ["data.name='foo'", "digits, mnist5k, shapes"]),
    ("train_gan", ["data.root={tmp}"], ["data.root=", "'digits' is built in and takes no root"]),
    ("train_diffusion", ["data.name=cifar10"], ["data.root=''", "set data.root="]),
    (
        "train_gan",
        ["xai.method=gradcampp", "xai.explainer_options={target: 5}"],
        ["xai.explainer_options.target=5", "one logit"],
    ),
    (
        "train_gan",
        ["xai.method=deeplift_shap", "xai.explainer_options={n_baselines: 0}"],
        ["xai.explainer_options", "n_baselines must be None (the default) or a whole number >= 1; got 0"],
    ),
    (
        "train_gan",
        ["xai.method=lime", "xai.explainer_options={n_samples: -1}"],
        ["xai.explainer_options", "n_samples must be a whole number >= 1; got -1"],
    ),
    (
        "train_gan",
        ["xai.method=integrated_gradients", "xai.explainer_options={n_steps: 0}"],
        ["xai.explainer_options", "n_steps must be a whole number >= 1; got 0"],
    ),
    ("train_gan", ["xai.method=smoothgrad", "xai.explainer_options={stdevs: -1}"], ["stdevs=-1", "number >= 0"]),
    ("train_gan", ["xai.method=saliency", "xai.explainer_options={abs: 'yes'}"], ["abs='yes'", "true or false"]),
    (
        "train_gan",
        ["model.arch=paper_mlp", "xai.enabled=true", "xai.method=gradcam"],
        ["xai.method='gradcam'", "model.arch='paper_mlp' has none", "model.arch=dcgan"],
    ),
    ("train_gan", ["train.max_step=5"], ["unknown key 'train.max_step'", "max_steps"]),
    ("train_gan", ["train.betas=[0.5,"], ["train.betas=[0.5,", "not valid YAML"]),
    ("train_gan", ["--config", "{tmp}/latin1.yaml"], ["latin1.yaml", "not UTF-8"]),
    ("train_gan", ["--config", "{tmp}/binary.yaml"], ["binary.yaml", "not UTF-8"]),
    ("train_gan", ["--config", "{tmp}/nul.yaml"], ["nul.yaml", "NUL bytes"]),
    ("train_gan", ["--config", "{tmp}/list.yaml"], ["list.yaml", "mapping"]),
    ("train_gan", ["--config", "{tmp}/broken.yaml"], ["broken.yaml", "not valid YAML"]),
    ("train_gan", ["--config", "{tmp}/missing.yaml"], ["missing.yaml", "does not exist"]),
    ("train_gan", ["--config", "{tmp}"], ["is a directory, not a YAML file"]),
    ("train_diffusion", ["importance_weight.method=foo"], ["importance_weight.method='foo'", "saliency"]),
    ("train_diffusion", ["importance_noise.method=foo"], ["importance_noise.method='foo'", "saliency"]),
    ("train_diffusion", ["importance_noise.enabled=true"], ["importance_noise.enabled", "discriminator.enabled=true"]),
    ("train_diffusion", ["importance_weight.alpha=-1"], ["importance_weight.alpha=-1.0", "> -1"]),
    ("train_diffusion", ["importance_noise.lambda_max=0.1"], ["importance_noise.lambda_max=0.1", "lambda_min"]),
    ("train_diffusion", ["data.image_size=30"], ["data.image_size=30", "divisible by 4"]),
    (
        "train_diffusion",
        ["discriminator.enabled=true", "importance_noise.enabled=true", "importance_noise.num_buckets=7"],
        ["importance_noise.num_buckets=7", "must divide scheduler.num_train_timesteps=1000", "num_buckets=5"],
    ),
    ("train_diffusion", ["unet.block_out_channels=[12, 24]"], ["unet.block_out_channels", "norm_num_groups=8"]),
    ("train_diffusion", ["train.lr_scheduler=cosin"], ["train.lr_scheduler='cosin'", "cosine"]),
    ("train_diffusion", ["train.max_steps=0"], ["train.max_steps=0", ">= 1"]),
    ("train_diffusion", ["train.sample_steps=5000"], ["train.sample_steps=5000", "num_train_timesteps=1000"]),
    ("train_diffusion", ["--config", "{tmp}/binary.yaml"], ["binary.yaml", "not UTF-8"]),
    ("sample", ["{tmp}/no_such_run"], ["no_such_run", "does not exist"]),
    ("sample", ["{tmp}", "--steps", "0"], ["--steps=0", ">= 1"]),
    ("sample", ["{tmp}"], ["has no config.yaml: not a run folder"]),
    ("sample", ["{tmp}", "--out", "{tmp}/binary.yaml"], ["--out=", "is a file; give a folder"]),
    ("ablate", ["{tmp}/binary.yaml"], ["binary.yaml", "not UTF-8"]),
    ("ablate", ["{tmp}/missing.yaml"], ["missing.yaml", "does not exist"]),
    ("train_gan", ["run.name=../../outside"], ["run.name='../../outside'", "one folder name", "run.output_dir"]),
    ("ablate", ["configs/ablation/xaigan_alpha.yaml", "--threads", "0"], ["--threads", "whole number >= 1"]),
    ("evaluate", ["{tmp}/no_such_run"], ["no_such_run", "has no config.yaml"]),
    ("evaluate", ["{tmp}/diffusion_run"], ["is a diffusion run", "evaluates GAN runs"]),
    ("evaluate", ["{tmp}", "--threads", "zero"], ["--threads must be a whole number"]),
    ("custom_loop", ["--steps", "-1"], ["--steps=-1: must be >= 1"]),
    ("custom_loop", ["--width", "0"], ["--width=0: must be >= 1"]),
]


@pytest.mark.parametrize("recipe, args, fragments", CLI_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_cli_bad_input_is_one_error_line_and_exit_2(recipes, tmp_path, capsys, recipe, args, fragments):
    bad_files(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if recipe in ("train_gan", "train_diffusion"):
        argv += [f"run.output_dir={tmp_path / 'runs'}"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(recipes[recipe].main, argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for fragment in fragments:
        assert fragment.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # stopped before the run folder was made


def test_valid_inputs_pass_the_same_checks():
    """Controls: the values next to the rejected ones load."""
    load_config(GANExperiment, overrides=["xai.alpha=-3", "xai.allow_sign_flip=true", "xai.alpha_warmup_steps=0"])
    load_config(GANExperiment, overrides=["xai.alpha=-1", "data.image_size=64", "train.max_steps=1"])
    load_config(GANExperiment, overrides=["model.arch=paper_mlp", "xai.preset=reference", "xai.method=saliency"])
    load_config(GANExperiment, overrides=["xai.method=integrated_gradients", "xai.explainer_options={n_steps: 4}"])
    load_config(GANExperiment, overrides=["xai.method=deeplift_shap", "xai.explainer_options={n_baselines: null}"])
    load_config(GANExperiment, overrides=["xai.method=smoothgrad", "xai.explainer_options={stdevs: 0, abs: true}"])
    load_config(GANExperiment, overrides=["model.arch=paper_mlp", "xai.enabled=true", "xai.method=fullgrad"])
    load_config(GANExperiment, overrides=["data.name=mnist", "data.root=/data/mnist"])  # existence: checked at load
    load_config(DiffusionExperiment, overrides=["data.image_size=28", "importance_weight.method=deeplift"])
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        if path.parent.name == "gan":
            load_config(GANExperiment, path)
        elif path.parent.name == "diffusion":
            load_config(DiffusionExperiment, path)


def test_debug_flag_and_env_show_the_traceback(recipes, monkeypatch, capsys):
    main = recipes["train_gan"].main
    with pytest.raises(ConfigError, match="xai.method='foo'"):
        run_main(main, ["xai.method=foo", "--debug"])
    monkeypatch.setenv("XAI_TRAIN_DEBUG", "1")
    with pytest.raises(ConfigError, match=r"train.max_steps=-3"):
        run_main(main, ["train.max_steps=-3"])
    assert capsys.readouterr().err == ""


def test_a_bug_is_not_a_user_error():
    def main(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_main(main, [])
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda argv: 1, [])
    assert exit_info.value.code == 1  # an int result is the exit code (ablate's failed cells)


@pytest.mark.slow
def test_real_subprocesses(tmp_path, process_groups):
    """A few cases as a user runs them: ``python recipes/<name>.py ...``, started together."""
    files = bad_files(tmp_path)
    out = f"run.output_dir={tmp_path / 'runs'}"
    cases = [
        (["recipes/train_gan.py", "xai.method=foo", out], "xai.method='foo'"),
        (["recipes/train_gan.py", "--config", str(files["binary.yaml"]), out], "not UTF-8"),
        (["recipes/train_diffusion.py", "importance_noise.method=foo", out], "importance_noise.method='foo'"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("XAI_TRAIN_DEBUG", None)
    procs = [
        process_groups.start([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for args, _ in cases
    ]
    for proc, (_args, fragment) in zip(procs, cases, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        lines = stderr.decode().splitlines()
        assert proc.returncode == 2, stderr.decode()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], stderr.decode()
        assert b"Traceback" not in stderr and stdout == b""


def test_sample_names_a_bad_checkpoint_or_pipeline(recipes, tmp_path, capsys):
    """sample.py on a broken run: truncated weights, another width, an unsealed newer folder, a corrupt export."""
    import yaml
    from safetensors.torch import save_file

    from xai_train.config import to_dict
    from xai_train.diffusion.models import build_unet

    small = ["unet.block_out_channels=[8, 8, 8]", "unet.norm_num_groups=4", "unet.layers_per_block=1"]
    config = load_config(DiffusionExperiment, overrides=small)
    run = tmp_path / "run"
    (run / "pipeline").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config)))
    (run / "pipeline" / "model_index.json").write_text("{not json")
    unet = build_unet(32, 1, block_out_channels=(8, 8, 8), norm_num_groups=4, layers_per_block=1)
    wide = build_unet(32, 1, block_out_channels=(16, 16, 16), norm_num_groups=4, layers_per_block=1)
    for step, model in ((1, unet), (2, wide), (3, unet)):
        folder = run / "checkpoints" / f"step_{step}"
        folder.mkdir(parents=True)
        save_file(model.state_dict(), folder / "model.safetensors")
        torch.save({"step": step}, folder / "trainer_state.pt")
        (folder / "checkpoint.json").write_text('{"files": {}}')
    (run / "checkpoints" / "step_3" / "model.safetensors").write_bytes(b"\0" * 100)  # truncated
    (run / "checkpoints" / "step_4").mkdir()  # unsealed (a save cut short): never picked
    (run / "checkpoints" / "step_foo").mkdir()

    def one_line_error(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run_main(recipes["sample"].main, [str(run), "--num-images", "1", "--steps", "1", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    assert "step_3: model.safetensors is truncated or corrupt" in one_line_error("--checkpoint", "latest")
    err = one_line_error("--checkpoint", "step_2")
    assert "'conv_in.weight' is (16, 1, 3, 3) in the checkpoint but (8, 1, 3, 3)" in err, err
    assert "model_index.json' is corrupt" in one_line_error() and "--checkpoint latest" in one_line_error()
    assert "--steps=5000" in one_line_error("--steps", "5000")
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(GANExperiment))))
    with pytest.raises(SystemExit):
        run_main(recipes["sample"].main, [str(tmp_path / "gan")])
    assert "is not a diffusion run" in capsys.readouterr().err
    out = run / "sampled" / "seed0_steps1"
    with pytest.raises(SystemExit) as exit_info:  # control: the intact checkpoint samples
        run_main(recipes["sample"].main, [str(run), "--num-images", "1", "--steps", "1", "--checkpoint", "step_1"])
    assert exit_info.value.code == 0 and (out / "samples.npz").is_file()


@pytest.mark.parametrize(
    "recipe, args",
    [
        ("explore", ["runs/demo", "--num-queries", "-1"]),
        ("dissect", ["runs/demo", "--num-samples", "0"]),
        ("correct_units", ["runs/demo", "--ks", "1", "0"]),
        ("explain", ["runs/demo", "--num-images", "two"]),
        ("counterfactual", ["--num-images", "0"]),
    ],
)
def test_analysis_recipes_refuse_a_count_below_one_before_loading(recipe, args, capsys):
    """Counts (images, samples, queries, k) are parsed as whole numbers >= 1: argparse's one error line, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        load_recipe(recipe).main(args)
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and "must be a whole number >= 1" in err[-1], err
