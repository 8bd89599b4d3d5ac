"""Bake a unit scaling into the generator's weights, and export the result as a ``torch.export`` file.

Scaling a unit's map by ``s >= 0`` after a positively homogeneous activation (ReLU, LeakyReLU) equals
scaling the activation's input, so the scale moves back through activations to the last affine layer
that produced the channel:

* ``BatchNorm2d`` (affine): ``s·(γ·x̂ + β) = (s·γ)·x̂ + s·β`` — exact in train and eval mode.
* ``Conv2d`` / ``ConvTranspose2d``: the channel's output weights and bias times ``s``. A BatchNorm right
  *after* such a conv normalises the scale away in train mode and turns it into a shift in eval mode:
  that is what the hook does too (the hook sits on the conv's output), so baked == hooked still holds, but
  to *suppress* a unit pick the layer after the norm (``…act``), which the recipes default to.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from xai_train.errors import UserError
from xai_train.generator.units import find_layer

HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)  # f(s·x) = s·f(x) for s >= 0 (Dropout: eval)


def _previous_sibling(generator: nn.Module, name: str) -> str:
    """The name of the module that runs right before ``name`` inside its ``nn.Sequential`` parent."""
    parent_name, _, child = name.rpartition(".")
    parent = generator.get_submodule(parent_name) if parent_name else generator
    if not isinstance(parent, nn.Sequential):
        raise UserError(
            f"cannot bake into layer {name!r}: its parent {type(parent).__name__} is not an nn.Sequential, so the "
            "module that produces its input is unknown; bake at a conv or BatchNorm layer instead"
        )
    children = list(parent._modules)
    index = children.index(child)
    if index == 0:
        raise UserError(
            f"cannot bake into layer {name!r}: it is the first module of {parent_name or 'the generator'}; "
            "bake at a conv or BatchNorm layer instead"
        )
    return f"{parent_name}.{children[index - 1]}" if parent_name else children[index - 1]


def bake_target(generator: nn.Module, layer: str) -> str:
    """The affine layer whose weights absorb a scale of ``layer``'s units (walking back through activations).

    Args:
        generator: the generator.
        layer: the edited layer's name.

    Returns:
        The name of a ``BatchNorm2d``, ``Conv2d`` or ``ConvTranspose2d``.

    Raises:
        UserError: the path back crosses a module that is not positively homogeneous (e.g. Tanh).

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> bake_target(DCGANGenerator(image_size=32, channels=1, width=8), "upsample.0.act")
        'upsample.0.norm'
    """
    find_layer(generator, layer)
    name = layer
    while True:
        module = generator.get_submodule(name)
        if isinstance(module, nn.BatchNorm2d) and module.affine:
            return name
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            if module.groups != 1:
                raise UserError(f"cannot bake into {name!r}: grouped convolutions (groups={module.groups})")
            return name
        if not isinstance(module, HOMOGENEOUS):
            raise UserError(
                f"cannot bake a unit scale of layer {layer!r} through {name!r} ({type(module).__name__}): only "
                "ReLU/LeakyReLU/Identity commute with a positive scale; choose a layer after a conv or BatchNorm"
            )
        name = _previous_sibling(generator, name)


@torch.no_grad()
def bake_unit_scale(generator: nn.Module, layer: str, scale: Tensor) -> nn.Module:
    """A copy of the generator whose weights scale ``layer``'s units by ``scale`` (no hook needed).

    Equals running the original under ``edit_units(G, layer, UnitEdit(scale))``: bit for bit for scales in
    {0, 1}, to float rounding (~1e-7 relative) otherwise.

    Args:
        generator: the generator (not modified).
        layer: the edited layer.
        scale: (K,) non-negative scales.

    Returns:
        The corrected copy (same class, same state-dict keys).

    Raises:
        UserError: negative scales, a wrong length, or a layer the scale cannot be moved back from.

    Example:
        >>> from xai_train.generator.units import UnitEdit, edit_units
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> scale = torch.ones(16); scale[3] = 0
        >>> z = torch.randn(4, 100)
        >>> with edit_units(G, "upsample.0.act", UnitEdit(scale)):
        ...     hooked = G(z)
        >>> torch.equal(bake_unit_scale(G, "upsample.0.act", scale).eval()(z), hooked)
        True
    """
    scale = torch.as_tensor(scale, dtype=torch.float32).flatten()
    if (scale < 0).any():
        raise UserError(f"bake_unit_scale: scales must be >= 0 (a ReLU only commutes with those), got {scale.min()}")
    target = bake_target(generator, layer)
    baked = copy.deepcopy(generator)
    module = baked.get_submodule(target)
    channels = module.num_features if isinstance(module, nn.BatchNorm2d) else module.out_channels
    if scale.numel() != channels:
        raise UserError(f"bake_unit_scale: layer {layer!r} has {channels} units, got {scale.numel()} scales")
    s = scale.to(module.weight)
    if isinstance(module, nn.BatchNorm2d):
        module.weight.mul_(s)
        module.bias.mul_(s)
    elif isinstance(module, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
        module.weight.mul_(s[None, :, None, None])
    else:  # Conv2d weight (out, in, kh, kw)
        module.weight.mul_(s[:, None, None, None])
    if not isinstance(module, nn.BatchNorm2d) and module.bias is not None:
        module.bias.mul_(s)
    return baked


def export_generator(generator: nn.Module, path: str | Path, latent_dim: int | None = None) -> Path:
    """Saves the generator (eval mode) as a ``torch.export`` program that plain PyTorch loads without this project.

    Load it with ``torch.export.load(path).module()``; the batch dimension is dynamic.

    Args:
        generator: the generator.
        path: the ``.pt2`` file to write (parent folders are created).
        latent_dim: the latent length; default ``generator.latent_dim``.

    Returns:
        The path.

    Example:
        >>> import os, tempfile
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> path = export_generator(G, os.path.join(tempfile.mkdtemp(), "G.pt2"))
        >>> z = torch.randn(3, 100)
        >>> torch.equal(torch.export.load(path).module()(z), G(z))
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    latent_dim = latent_dim or generator.latent_dim
    frozen = copy.deepcopy(generator).eval().cpu()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(frozen, (torch.zeros(2, latent_dim),), dynamic_shapes=({0: batch},))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export wants the .pt2 suffix
    torch.export.save(program, tmp)
    tmp.replace(path)
    return path
