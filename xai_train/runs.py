"""Find a trained run's checkpoint by name, and load a GAN run's generator and discriminator.

A run folder (``recipes/train_gan.py``, ``recipes/train_diffusion.py``) holds ``config.yaml`` (the resolved
config) and ``checkpoints/<name>/`` folders written by :class:`xai_train.checkpoint.CheckpointManager`:
``step_<N>`` and named ones such as ``best``, each complete once its ``checkpoint.json`` exists
(:func:`xai_train.checkpoint.list_checkpoints`). Accelerate stores the first prepared model (G, or the UNet)
as ``model.safetensors`` and the second (D) as ``model_1.safetensors``; ``trainer_state.pt`` holds the EMA
weights when the run kept them. A corrected-generator folder (``xai_train.generator.run.save_generator_folder``)
holds ``config.yaml`` and ``model.safetensors`` directly.

Nothing here executes code from the files: YAML is read safely, tensors with safetensors and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from xai_train.checkpoint import COMPLETE_FILE, TRAINER_STATE_FILE, CheckpointError, list_checkpoints, read_state_file
from xai_train.checkpoint.reading import step_folders
from xai_train.config import load_config
from xai_train.config.gan import GANExperiment
from xai_train.models import build_gan

GENERATOR_FILE = "model.safetensors"  # Accelerate's name for the first prepared model (G)
DISCRIMINATOR_FILE = "model_1.safetensors"


@dataclasses.dataclass
class GANRun:
    """A loaded GAN run.

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


def step_checkpoints(directory: str | Path) -> list[Path]:
    """A run's loadable ``step_<N>`` folders, oldest first: the complete ones (with ``checkpoint.json``).

    The checkpoint manager renames a folder into place only after writing its marker, so a visible folder
    without one predates the marker (an older version) or was copied by hand. Only when a run has no complete
    checkpoint at all are such legacy folders holding ``model.safetensors`` used; otherwise they are ignored.

    Args:
        directory: a run's ``checkpoints`` folder.

    Returns:
        The folders sorted by step (empty if there are none).

    Example:
        >>> import tempfile
        >>> directory = Path(tempfile.mkdtemp())
        >>> for name in ("step_1", "step_2"):
        ...     (directory / name).mkdir()
        ...     _ = (directory / name / GENERATOR_FILE).write_bytes(b"")
        >>> [p.name for p in step_checkpoints(directory)]  # legacy run: no checkpoint.json anywhere
        ['step_1', 'step_2']
        >>> _ = (directory / "step_1" / COMPLETE_FILE).write_text("{}")
        >>> [p.name for p in step_checkpoints(directory)]  # step_2 is now a save cut short
        ['step_1']
    """
    complete = list_checkpoints(directory)
    if complete or any(Path(directory).glob(f"*/{COMPLETE_FILE}")):
        return complete
    return [p for p in step_folders(directory) if (p / GENERATOR_FILE).is_file()]


def checkpoint_names(run_dir: str | Path) -> list[str]:
    """The names :func:`checkpoint_folder` accepts for a run: ``latest`` (if any), named ones, ``step_<N>``.

    Args:
        run_dir: the run folder (holding ``checkpoints/``).

    Returns:
        ``["latest", "best", "step_100", ...]``: only complete checkpoints (with ``checkpoint.json``).

    Example:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> for name in ("step_5", "step_10", "best", "step_20"):
        ...     (run_dir / "checkpoints" / name).mkdir(parents=True)
        >>> for name in ("step_5", "step_10", "best"):  # step_20 was cut short: no checkpoint.json
        ...     _ = (run_dir / "checkpoints" / name / COMPLETE_FILE).write_text("{}")
        >>> checkpoint_names(run_dir)
        ['latest', 'best', 'step_5', 'step_10']
    """
    directory = Path(run_dir) / "checkpoints"
    steps = [p.name for p in step_checkpoints(directory)]
    named = [] if not directory.is_dir() else sorted(
        p.name for p in directory.iterdir()
        if p.is_dir() and not p.name.startswith((".", "step_")) and (p / COMPLETE_FILE).is_file()
    )  # fmt: skip
    return (["latest"] if steps else []) + named + steps


def checkpoint_folder(run_dir: str | Path, name: str = "latest", fix: str = "train longer") -> Path:
    """``latest`` (the newest complete ``step_<N>``), a named checkpoint (``best``) or ``step_<N>`` -> its folder.

    Only complete checkpoints count: a folder without ``checkpoint.json`` (a save cut short) is never chosen
    (see :func:`step_checkpoints` for runs written before the marker existed).

    Args:
        run_dir: the run folder.
        name: ``latest``, ``best`` (or another named checkpoint) or ``step_<N>``.
        fix: what the error suggests when the run has no complete checkpoint at all.

    Returns:
        The checkpoint folder.

    Raises:
        CheckpointError: no such complete checkpoint; the one-line message lists the valid names.

    Example:
        >>> try:
        ...     checkpoint_folder(Path("/nonexistent"), "latest")
        ... except CheckpointError as err:
        ...     print(err)
        '/nonexistent/checkpoints' holds no complete checkpoint (a step_<N> folder with checkpoint.json); train longer
    """
    run_dir = Path(run_dir)
    names = checkpoint_names(run_dir)
    if not names:
        raise CheckpointError(
            f"'{run_dir}/checkpoints' holds no complete checkpoint (a step_<N> folder with {COMPLETE_FILE}); {fix}"
        )
    if name == "latest" and "latest" in names:
        return step_checkpoints(run_dir / "checkpoints")[-1]
    if name not in names:
        raise CheckpointError(
            f"'{run_dir / 'checkpoints' / name}' is not a complete checkpoint; choose one of: {', '.join(names)}"
        )
    return run_dir / "checkpoints" / name


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Loads a safetensors state dict into ``model`` and puts it in eval mode.

    Args:
        model: the built model.
        path: its ``.safetensors`` file.

    Returns:
        ``model``.

    Raises:
        CheckpointError: the file is missing, unreadable, or does not fit the model.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"weight": torch.ones(1, 2), "bias": torch.zeros(1)}, str(path))
        >>> load_weights(nn.Linear(2, 1), path).weight.sum().item()
        2.0
    """
    try:
        model.load_state_dict(load_file(path))
    except (SafetensorError, RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load '{path}' into {type(model).__name__}: {first}") from err
    return model.eval()


def load_gan_run(path: str | Path, checkpoint: str = "latest") -> GANRun:
    """Rebuilds G and D from the run's config and loads a checkpoint (or a corrected-generator folder).

    Args:
        path: a run folder (``runs/demo``) or a corrected-generator folder.
        checkpoint: ``latest``, ``best`` or ``step_<N>`` (ignored for a corrected-generator folder).

    Returns:
        The :class:`GANRun` (``run.generator, run.discriminator, run.config``).

    Raises:
        CheckpointError: no config.yaml, no such checkpoint, or weights that do not fit the config's model.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> from xai_train.config import save_config
        >>> from xai_train.config.gan import GANModelConfig
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> save_config(GANExperiment(model=GANModelConfig(g_width=8, d_width=8)), run_dir / "config.yaml")
        >>> G, D = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> folder = run_dir / "checkpoints" / "step_3"
        >>> folder.mkdir(parents=True)
        >>> save_file(G.state_dict(), str(folder / GENERATOR_FILE))
        >>> save_file(D.state_dict(), str(folder / DISCRIMINATOR_FILE))
        >>> _ = (folder / COMPLETE_FILE).write_text("{}")
        >>> run = load_gan_run(run_dir)
        >>> run.folder.name, torch.equal(run.discriminator.head.weight, D.head.weight)
        ('step_3', True)
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
    load_weights(generator, folder / GENERATOR_FILE)
    has_d = (folder / DISCRIMINATOR_FILE).is_file()
    discriminator = load_weights(discriminator, folder / DISCRIMINATOR_FILE) if has_d else None
    state_file = folder / TRAINER_STATE_FILE
    ema = read_state_file(state_file).get("ema") if state_file.is_file() else None
    if ema is not None:
        with torch.no_grad():
            for param, shadow in zip(generator.parameters(), ema["shadow_params"], strict=True):
                param.copy_(shadow)
    return GANRun(generator, discriminator, config, folder)
