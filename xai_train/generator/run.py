"""Save a corrected generator as a folder :func:`load_gan_run` reads like a run (re-exports the run loader).

A run folder (``recipes/train_gan.py``) holds ``config.yaml`` (the resolved config) and
``checkpoints/step_<N>/`` with Accelerate's ``model.safetensors`` (G, prepared first) and
``model_1.safetensors`` (D), plus ``trainer_state.pt`` (EMA weights when the run kept them). A corrected
generator folder (:func:`save_generator_folder`) holds ``config.yaml`` and ``model.safetensors`` directly.
Nothing here executes code from the files: YAML is read safely, tensors with safetensors and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from xai_train.runs import (  # re-exported: the loader lives in xai_train.runs, shared by every recipe
    DISCRIMINATOR_FILE,
    GENERATOR_FILE,
    GANRun,
    checkpoint_folder,
    load_gan_run,
)

__all__ = [
    "DISCRIMINATOR_FILE",
    "GENERATOR_FILE",
    "GANRun",
    "checkpoint_folder",
    "load_gan_run",
    "save_generator_folder",
]


def save_generator_folder(generator: nn.Module, run_dir: str | Path, out: str | Path) -> Path:
    """Writes ``out/model.safetensors`` (G's weights) and a copy of the run's ``config.yaml``.

    :func:`load_gan_run` loads the folder like a run; plain PyTorch loads the weights with
    ``safetensors.torch.load_file`` into the model the config describes.

    Returns:
        ``out``.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from xai_train.config import save_config
        >>> from xai_train.config.gan import GANExperiment, GANModelConfig
        >>> from xai_train.models import build_gan
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> save_config(GANExperiment(model=GANModelConfig(g_width=8, d_width=8)), run_dir / "config.yaml")
        >>> G, _ = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> run = load_gan_run(save_generator_folder(G, run_dir, run_dir / "corrected"))
        >>> torch.equal(run.generator.project.conv.weight, G.project.conv.weight), run.discriminator
        (True, None)
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GENERATOR_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(tmp))
    tmp.replace(out / GENERATOR_FILE)
    shutil.copyfile(Path(run_dir) / "config.yaml", out / "config.yaml")
    return out
