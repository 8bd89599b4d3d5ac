"""Every bad input of issue 8 §1 ends in one clear line (CLI) or one clear exception (API), before any training.

CLI cases run the recipes' ``main`` in this process through ``xai_train.cli.run_main`` (the same code path
as ``python recipes/<name>.py ...``) with the trainers replaced by a stub that fails the test if reached,
so every case is proven to stop before the first step. A handful run as real subprocesses as well.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from callbacks import XAIGradientMask
from xai_train import CallbackList, TrainState
from xai_train.cli import run_main
from xai_train.config import ConfigError, load_config
from xai_train.config.common import DataConfig, EvalConfig
from xai_train.config.diffusion import DiffusionExperiment, ImportanceNoiseConfig, ImportanceWeightConfig
from xai_train.config.gan import GANExperiment, GANModelConfig, GANTrainConfig, XAIConfig
from xai_train.explain import attribute, to_mask
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

REPO = Path(__file__).resolve().parents[1]
D_MESSAGE = "the discriminator must return (B, 1) logits, got (B, 2) (B = 4)"


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
    modules = {name: load_recipe(name) for name in ("train_gan", "train_diffusion", "sample", "ablate", "custom_loop")}
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
    ("train_gan", ["data.name=foo"], ["data.name='foo'", "digits, shapes"]),
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


# --- the public API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, pattern",
    [
        (lambda: GANTrainConfig(max_steps=-3), ConfigError, "max_steps=-3: must be >= 1"),
        (lambda: GANTrainConfig(lr_g=-1.0), ConfigError, "lr_g=-1.0: must be a finite number > 0"),
        (lambda: GANTrainConfig(d_steps_per_g_step=0), ConfigError, "d_steps_per_g_step=0"),
        (lambda: GANTrainConfig(loss="mse"), ConfigError, "loss='mse': choose one of 'bce'"),
        (lambda: GANModelConfig(arch="resnet"), ConfigError, "arch='resnet'"),
        (lambda: XAIConfig(method="foo"), ConfigError, "method='foo': unknown explainer"),
        (lambda: XAIConfig(alpha=-3.0), ConfigError, "alpha=-3.0: below -1"),
        (lambda: XAIConfig(preset="paper"), ConfigError, "preset='paper'"),
        (lambda: XAIConfig(every_n_steps=0), ConfigError, "every_n_steps=0"),
        (lambda: EvalConfig(metrics=("bogus",)), ConfigError, "unknown 'bogus'"),
        (lambda: DataConfig(fraction=1.5), ConfigError, "fraction=1.5"),
        (lambda: GANExperiment(data=DataConfig(image_size=48)), ConfigError, "data.image_size=48"),
        (lambda: ImportanceWeightConfig(method="foo"), ConfigError, "method='foo'"),
        (lambda: ImportanceNoiseConfig(method="foo"), ConfigError, "method='foo'"),
        (lambda: XAIGradientMask(0.2), TypeError, r"method=0.2: .*did you mean alpha=0.2"),
        (lambda: XAIGradientMask("foo"), ValueError, "method='foo': unknown explainer"),
        (lambda: XAIGradientMask(alpha=-3), ValueError, "alpha=-3: below -1"),
        (lambda: XAIGradientMask(alpha=float("nan")), ValueError, "alpha=nan: must be finite"),
        (lambda: XAIGradientMask(alpha="0.2"), TypeError, "alpha='0.2': must be a number"),
        (lambda: XAIGradientMask(every_n_steps=0), ValueError, "every_n_steps=0: must be >= 1"),
        (lambda: XAIGradientMask(start_step=2.5), TypeError, "start_step=2.5: must be an integer"),
        (lambda: XAIGradientMask(blur_sigma=-1), ValueError, "blur_sigma=-1"),
        (lambda: XAIGradientMask(explainer_options=[1]), TypeError, "explainer_options=\\[1\\]: must be a mapping"),
        (lambda: XAIGradientMask("saliency", {"n_steps": 3}), TypeError, "explainer_options=.*n_steps"),
        (lambda: build_gan("dcgan", image_size=48, channels=1), ValueError, "supported sizes: 32, 64"),
        (lambda: to_mask(torch.rand(2, 3, 4)), ValueError, r"\(B, C, H, W\)"),
        (lambda: to_mask(torch.rand(2, 1, 4, 4).numpy()), TypeError, "tensor of attributions, got ndarray"),
        (lambda: XAIGradientMask("lime", {"n_samples": -1}), ValueError, "n_samples must be a whole number >= 1"),
        (lambda: XAIGradientMask("saliency", {"abs": "no"}), ValueError, "abs='no' must be true or false"),
        (lambda: DataConfig(name="mnist"), ConfigError, "set data.root=<folder with the MNIST IDX files"),
        (
            lambda: CallbackList([XAIGradientMask]),
            TypeError,
            r"got the class XAIGradientMask: pass XAIGradientMask\(...\)",
        ),
        (lambda: CallbackList([object()]), TypeError, "callbacks must be Callback instances"),
        (lambda: CallbackList().append(XAIGradientMask), TypeError, "got the class XAIGradientMask"),
    ],
)
def test_api_bad_arguments(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


def test_api_opt_in_allows_a_sign_flip():
    assert XAIGradientMask(alpha=-3, allow_sign_flip=True).alpha == -3
    assert XAIConfig(alpha=-3.0, allow_sign_flip=True).alpha == -3.0


class TwoLogits(nn.Module):
    """A D that returns two logits per image (a classifier head): breaks the (B, 1) contract."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


def test_d_output_not_b1_gives_the_same_message_everywhere():
    d, images = TwoLogits(), torch.randn(4, 1, 4, 4)
    messages = []
    with pytest.raises(ValueError) as err:
        attribute(d, images, "saliency")
    messages.append(str(err.value))
    state = TrainState(Accelerator(cpu=True))
    for method in ("grad", "saliency"):  # the free-saliency path and the explainer path
        fake = images.clone().requires_grad_()
        with pytest.raises(ValueError) as err:
            XAIGradientMask(method).on_generator_forward(state, fake, d(fake), d)
        messages.append(str(err.value))
    with pytest.raises(ValueError) as err:
        CallbackList([]).on_generator_forward(state, images.clone().requires_grad_(), d(images), d)
    messages.append(str(err.value))
    assert messages == [D_MESSAGE] * 4


def test_d_output_not_b1_stops_the_gan_trainer_at_its_first_step():
    class Generator(nn.Module):
        latent_dim = 3

        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 16)

        def forward(self, z):
            return torch.tanh(self.net(z)).reshape(-1, 1, 4, 4)

    config = GANTrainConfig(batch_size=4, max_steps=2, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(Generator(), TwoLogits(), torch.rand(8, 1, 4, 4) * 2 - 1, config, cpu=True)
    with pytest.raises(ValueError, match=re.escape(D_MESSAGE)):
        trainer.train()
    assert trainer.state.step == 0


def test_flat_generator_output_is_named_before_the_backward():
    d = nn.Sequential(nn.Linear(784, 1))
    fake = torch.randn(4, 784, requires_grad=True)
    state = TrainState(Accelerator(cpu=True))
    callbacks = CallbackList([XAIGradientMask()])
    with pytest.raises(
        ValueError, match=re.escape("the generator output `fake` must be images (B, C, H, W), got (B, 784)")
    ):
        callbacks.on_generator_forward(state, fake, d(fake), d)
    assert fake.grad is None and fake.grad_fn is None  # nothing was hooked: the error came before any backward


def test_non_finite_batches_are_errors_not_zero_masks():
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    images = torch.randn(4, 1, 4, 4)
    images[2, 0, 1, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"attribute\(\): the images contain NaN or Inf in 1 of 4 samples \(first: sample 2\)"
    ):
        attribute(d, images, "saliency")
    fake = images.clone().requires_grad_()
    with pytest.raises(ValueError, match=r"the images contain NaN or Inf in 1 of 4 samples"):
        XAIGradientMask("saliency").on_generator_forward(TrainState(Accelerator(cpu=True)), fake, d(fake), d)
    attributions = torch.rand(4, 1, 4, 4)
    attributions[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"to_mask\(\): the attributions contain NaN or Inf in 1 of 4 samples"):
        to_mask(attributions)
    flagged = to_mask(attributions, nonfinite="flag")  # the documented, counted outcome (free saliency uses it)
    assert flagged.degenerate.tolist() == [False, True, False, False] and flagged.num_degenerate == 1
    assert torch.equal(flagged.mask[0], to_mask(attributions[[0]]).mask[0])  # the other samples are unaffected


def test_a_second_on_generator_forward_on_one_fake_is_an_error():
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    fake = torch.randn(2, 1, 4, 4, requires_grad=True)
    out = fake * 1.0
    state = TrainState(Accelerator(cpu=True))
    callbacks = CallbackList([XAIGradientMask(alpha=1.0)])
    callbacks.on_generator_forward(state, out, d(out), d)
    with pytest.raises(ValueError, match="already called for this `fake`"):
        callbacks.on_generator_forward(state, out, d(out), d)
    w = torch.arange(16.0).reshape(1, 1, 4, 4).expand(2, 1, 4, 4)
    (out * w).sum().backward()  # one hook: g ⊙ (1 + αM) with M = w / 15 (free saliency), never (1 + αM)²
    assert torch.allclose(fake.grad, w * (1 + w / 15))
    fresh = fake * 1.0  # the next forward is fine
    assert callbacks.on_generator_forward(state, fresh, d(fresh), d) is not None


def caught_warnings(callback, steps):
    d = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    state = TrainState(Accelerator(cpu=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in steps:
            state.step = step
            fake = torch.randn(2, 1, 4, 4, requires_grad=True)
            callback.on_generator_forward(state, fake, d(fake), d)
    return [w for w in caught if "advance state.step" in str(w.message)]


def test_a_loop_that_never_advances_the_step_warns_once():
    assert len(caught_warnings(XAIGradientMask(start_step=5), [0] * 6)) == 1
    assert len(caught_warnings(XAIGradientMask(every_n_steps=2), [0, 0])) == 1
    assert len(caught_warnings(XAIGradientMask(alpha_warmup_steps=3), [0, 0])) == 1
    assert caught_warnings(XAIGradientMask(start_step=5), range(6)) == []  # a loop that advances it
    assert caught_warnings(XAIGradientMask(), [0] * 6) == []  # nothing depends on the step


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
    "method, options, pattern",
    [
        ("integrated_gradients", {"method": "foo"}, "method='foo' is not one of: riemann_left"),
        ("deeplift_shap", {"baselines": 5}, "baselines must be a tensor, got int 5"),
        ("occlusion", {"baselines": "grey"}, "baselines must be a number or a tensor"),
        ("gradcam", {"layer": "features.3"}, "layer must be a module of D"),
        ("occlusion", {"window": 0}, "window must be None \\(the default\\) or a whole number >= 1; got 0"),
        ("occlusion", {"stride": [2, 2]}, "stride must be None"),
    ],
)
def test_explainer_option_values_are_checked_before_the_call(method, options, pattern):
    _, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    with pytest.raises(ValueError, match=pattern):
        attribute(discriminator, torch.randn(2, 1, 32, 32), method, **options)
    with pytest.raises(ValueError, match=pattern):
        XAIGradientMask(method, options)  # the callback (and xai.explainer_options) fail at construction


def test_integrated_gradients_method_option_reaches_captum():
    """IG's own ``method`` option collided with attribute()'s argument ("got multiple values"); it now passes."""
    from captum.attr import IntegratedGradients
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

    from xai_train.explain.base import CHOICE_OPTIONS

    assert set(CHOICE_OPTIONS["integrated_gradients", "method"]) == set(SUPPORTED_METHODS)  # the installed captum
    torch.manual_seed(0)
    _, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    discriminator.eval()
    images = torch.randn(3, 1, 32, 32)
    ours = attribute(discriminator, images, "integrated_gradients", method="riemann_trapezoid", n_steps=5)
    theirs = IntegratedGradients(discriminator).attribute(images, baselines=0.0, n_steps=5, method="riemann_trapezoid")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    default = attribute(discriminator, images, "integrated_gradients", n_steps=5)  # gausslegendre differs
    assert not torch.allclose(ours, default, atol=1e-6)
