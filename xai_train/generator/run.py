"""Save a corrected generator as a folder :func:`load_gan_run` reads like a run (re-exports the run loader).

A run folder (``recipes/train_gan.py``) holds ``config.yaml`` (the resolved config) and
``checkpoints/step_<N>/`` with Accelerate's ``model.safetensors`` (G, prepared first) and
``model_1.safetensors`` (D), plus ``trainer_state.pt`` (EMA weights when the run kept them). A corrected
generator folder (:func:`save_generator_folder`) holds ``config.yaml`` and ``model.safetensors`` directly.
Nothing here executes code from the files: YAML is read safely, tensors with safetensors and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
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
from xai_train.threads import configure_threads

__all__ = [
    "DISCRIMINATOR_FILE",
    "GENERATOR_FILE",
    "GANRun",
    "checkpoint_folder",
    "load_gan_run",
    "parse_run_arguments",
    "run_parser",
    "save_generator_folder",
]


def run_parser(description: str | None) -> argparse.ArgumentParser:
    """The argument parser of a recipe that reads a GAN run: ``run_dir`` first, the recipe adds its options.

    Args:
        description: the recipe's docstring (shown verbatim by ``--help``).

    Returns:
        The parser; finish with :func:`parse_run_arguments`.

    Example:
        See :func:`parse_run_arguments`.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a GAN run folder, e.g. runs/demo")
    return parser


def parse_run_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, GANRun]:
    """Adds the options every GAN-run recipe shares, parses ``argv``, sets the threads and loads the run.

    Shared options: ``--checkpoint`` (latest, best or step_<N>), ``--seed``, ``--out`` and ``--threads``.

    Args:
        parser: from :func:`run_parser`, with the recipe's own options added.
        argv: the command line (``None``: ``sys.argv[1:]``).

    Returns:
        The parsed arguments and the loaded :class:`GANRun`.

    Raises:
        CheckpointError: the run or checkpoint cannot be loaded.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from xai_train.config import save_config
        >>> from xai_train.config.gan import GANExperiment, GANModelConfig
        >>> from xai_train.models import build_gan
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> save_config(GANExperiment(model=GANModelConfig(g_width=8, d_width=8)), run_dir / "config.yaml")
        >>> G, _ = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> folder = save_generator_folder(G, run_dir, run_dir / "corrected")
        >>> parser = run_parser("demo")
        >>> parser.add_argument("--k", type=int, default=4)  # doctest: +ELLIPSIS
        _StoreAction(...)
        >>> threads = torch.get_num_threads()
        >>> args, run = parse_run_arguments(parser, [str(folder), "--seed", "3", "--threads", "1"])
        >>> args.k, args.seed, args.checkpoint, run.folder == folder, run.discriminator
        (4, 3, 'latest', True, None)
        >>> torch.equal(run.generator.project.conv.weight, G.project.conv.weight)
        True
        >>> torch.set_num_threads(threads)
    """
    parser.add_argument("--checkpoint", default="latest", help="'latest', 'best' or step_<N>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", help="torch CPU threads, a number or 'auto' (default: xai_train/threads.py)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)  # --threads, XAI_TRAIN_THREADS, OMP_NUM_THREADS, else half the CPUs
    return args, load_gan_run(args.run_dir, args.checkpoint)


def save_generator_folder(generator: nn.Module, run_dir: str | Path, out: str | Path) -> Path:
    """Writes ``out/model.safetensors`` (G's weights) and a copy of the run's ``config.yaml``.

    :func:`load_gan_run` loads the folder like a run; plain PyTorch loads the weights with
    ``safetensors.torch.load_file`` into the model the config describes.

    Returns:
        ``out``.

    Example:
        See :func:`parse_run_arguments` (it loads a folder written here).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GENERATOR_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(tmp))
    tmp.replace(out / GENERATOR_FILE)
    shutil.copyfile(Path(run_dir) / "config.yaml", out / "config.yaml")
    return out
