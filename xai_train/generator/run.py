"""Load a trained GAN run's generator (and discriminator) from its folder, and save a corrected generator.

A run folder (``recipes/train_gan.py``) holds ``config.yaml`` (the resolved config) and
``checkpoints/step_<N>/`` with Accelerate's ``model.safetensors`` (G, prepared first) and
``model_1.safetensors`` (D), plus ``trainer_state.pt`` (EMA weights when the run kept them). A corrected
generator folder (:func:`save_generator_folder`) holds ``config.yaml`` and ``model.safetensors`` directly.
Nothing here executes code from the files: YAML is read safely, tensors with safetensors and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xai_train.checkpoint import TRAINER_STATE_FILE, CheckpointError
from xai_train.config import load_config
from xai_train.config.gan import GANExperiment
from xai_train.models import build_gan

GENERATOR_FILE = "model.safetensors"  # Accelerate's name for the first prepared model (G)
DISCRIMINATOR_FILE = "model_1.safetensors"


@dataclasses.dataclass
class GANRun:
    """A loaded run.

    Attributes:
        generator: G in eval mode (EMA weights when the run kept them).
        discriminator: D in eval mode, or ``None`` (a corrected-generator folder has none).
        config: the run's resolved config.
        folder: the folder the weights came from.
    """

    generator: nn.Module
    discriminator: nn.Module | None
    config: GANExperiment
    folder: Path


def checkpoint_folder(run_dir: Path, name: str) -> Path:
    """``latest`` or ``step_<N>`` -> the run's checkpoint folder.

    Raises:
        CheckpointError: no such checkpoint (the message lists the ones there are).

    Example:
        >>> try:
        ...     checkpoint_folder(Path("/nonexistent"), "latest")
        ... except CheckpointError as err:
        ...     print(err)
        '/nonexistent/checkpoints' holds no step_<N> folder; is '/nonexistent' a GAN run?
    """
    folders = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    if name == "latest":
        if not folders:
            raise CheckpointError(f"'{run_dir}/checkpoints' holds no step_<N> folder; is '{run_dir}' a GAN run?")
        return folders[-1]
    folder = run_dir / "checkpoints" / name
    if not (folder / GENERATOR_FILE).is_file():
        raise CheckpointError(f"'{folder}' is not a checkpoint; choose latest or one of: {[p.name for p in folders]}")
    return folder


def load_gan_run(path: str | Path, checkpoint: str = "latest") -> GANRun:
    """Rebuilds G and D from the run's config and loads a checkpoint (or a corrected-generator folder).

    Args:
        path: a run folder (``runs/demo``) or a folder written by :func:`save_generator_folder`.
        checkpoint: ``latest`` or ``step_<N>`` (ignored for a corrected-generator folder).

    Returns:
        The :class:`GANRun`.

    Raises:
        CheckpointError: no config.yaml, no checkpoint, or weights that do not fit the config's model.

    Example:
        >>> import tempfile
        >>> from xai_train.config import save_config
        >>> from xai_train.config.gan import GANModelConfig
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> save_config(GANExperiment(model=GANModelConfig(g_width=8, d_width=8)), run_dir / "config.yaml")
        >>> G, _ = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> folder = save_generator_folder(G, run_dir, run_dir / "corrected")
        >>> run = load_gan_run(folder)
        >>> torch.equal(run.generator.project.conv.weight, G.project.conv.weight), run.discriminator
        (True, None)
    """
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"'{path}' has no config.yaml; pass a GAN run folder such as runs/demo")
    config = load_config(GANExperiment, path / "config.yaml")
    data, model = config.data, config.model
    generator, discriminator = build_gan(
        model.arch, image_size=data.image_size, channels=data.channels, latent_dim=model.latent_dim,
        g_width=model.g_width, d_width=model.d_width, g_norm=model.g_norm, d_norm=model.d_norm, dropout=model.dropout,
    )  # fmt: skip
    folder = path if (path / GENERATOR_FILE).is_file() else checkpoint_folder(path, checkpoint)
    try:
        generator.load_state_dict(load_file(folder / GENERATOR_FILE))
        if (folder / DISCRIMINATOR_FILE).is_file():
            discriminator.load_state_dict(load_file(folder / DISCRIMINATOR_FILE))
        else:
            discriminator = None
    except RuntimeError as err:
        raise CheckpointError(f"the weights in '{folder}' do not fit the model of {path}/config.yaml: {err}") from err
    state_file = folder / TRAINER_STATE_FILE
    ema = torch.load(state_file, map_location="cpu", weights_only=True).get("ema") if state_file.is_file() else None
    if ema is not None:
        with torch.no_grad():
            for param, shadow in zip(generator.parameters(), ema["shadow_params"], strict=True):
                param.copy_(shadow)
    return GANRun(
        generator.eval(), None if discriminator is None else discriminator.eval(), config, folder
    )  # fmt: skip


def save_generator_folder(generator: nn.Module, run_dir: str | Path, out: str | Path) -> Path:
    """Writes ``out/model.safetensors`` (G's weights) and a copy of the run's ``config.yaml``.

    :func:`load_gan_run` loads the folder like a run; plain PyTorch loads the weights with
    ``safetensors.torch.load_file`` into the model the config describes.

    Returns:
        ``out``.

    Example:
        See :func:`load_gan_run`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GENERATOR_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(tmp))
    tmp.replace(out / GENERATOR_FILE)
    shutil.copyfile(Path(run_dir) / "config.yaml", out / "config.yaml")
    return out
