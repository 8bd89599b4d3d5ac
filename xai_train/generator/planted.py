"""A known answer for generator explainers: plant a unit that draws a blob on a known share of latents.

``plant_blob`` rewires one channel per stage of a DCGAN generator into a private chain: the first block's
channel fires at one 4×4 position when ``u·z > c`` (so on ``P(N(0,1) > c)`` of the latents), each later
stage copies it with a 2× nearest-neighbour kernel, and the output layer adds a bright square there. The
chain's channels feed nothing else, so on latents with ``u·z ≤ c`` the planted generator's images equal
those of the same generator with the chain ablated, bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from xai_train.errors import UserError
from xai_train.models import DCGANGenerator


@dataclasses.dataclass
class PlantedBlob:
    """A generator with a planted blob unit.

    Attributes:
        generator: the planted copy.
        units: ``{layer name: planted channel}`` for every stage (the first block's is the source).
        direction: (latent_dim,) unit vector ``u``.
        offset: ``c``: the blob shows where ``u·z > c``.
        blob: (1, 1, H, W) bool: the pixels the blob covers.
    """

    generator: nn.Module
    units: dict[str, int]
    direction: Tensor
    offset: float
    blob: Tensor

    def shows_blob(self, latents: Tensor, margin: float = 0.0) -> Tensor:
        """(N,) bool: ``u·z > c + margin`` (a margin keeps only clearly visible blobs)."""
        return latents @ self.direction.to(latents) > self.offset + margin


@torch.no_grad()
def plant_blob(
    generator: DCGANGenerator,
    *,
    fraction: float = 0.2,
    position: tuple[int, int] = (1, 1),
    gain: float = 8.0,
    brightness: float = 4.0,
    seed: int = 0,
) -> PlantedBlob:
    """A copy of a DCGAN generator whose last channel of every stage draws a blob on ``fraction`` of latents.

    Args:
        generator: a :class:`~xai_train.models.DCGANGenerator` (BatchNorm or not; not modified).
        fraction: the share of N(0, I) latents that show the blob.
        position: the 4×4 cell of the first block that fires (the blob covers its 1/4 × 1/4 of the image).
        gain: slope of the source unit, ``gain·(u·z − c)``.
        brightness: weight of the chain in the output layer (tanh saturates to white a little past ``c``).
        seed: draws the direction ``u``.

    Returns:
        The :class:`PlantedBlob`.

    Example:
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> planted = plant_blob(G, fraction=0.25)
        >>> z = torch.randn(2000, 100, generator=torch.Generator().manual_seed(0))
        >>> round(planted.shows_blob(z).float().mean().item(), 1), planted.units["upsample.0.act"]
        (0.2, 15)
    """
    if not isinstance(generator, DCGANGenerator):
        raise TypeError(f"plant_blob needs a DCGANGenerator, got {type(generator).__name__}")
    if not 0 < fraction < 1:
        raise UserError(f"fraction must lie in (0, 1), got {fraction}")
    planted = copy.deepcopy(generator).eval()
    direction = torch.randn(planted.latent_dim, generator=torch.Generator().manual_seed(seed))
    direction /= direction.norm()
    offset = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - fraction)).item()
    blocks = [planted.project, *planted.upsample]
    names = ["project", *[f"upsample.{i}" for i in range(len(planted.upsample))]]
    channels = [block.conv.out_channels - 1 for block in blocks]

    first = blocks[0].conv  # weight (latent, K, 4, 4)
    first.weight[:, channels[0]] = 0
    first.weight[:, channels[0], position[0], position[1]] = gain * direction
    _set_bias(blocks[0], channels[0], -gain * offset)
    for block, previous, channel in zip(blocks[1:], channels[:-1], channels[1:], strict=True):
        conv = block.conv  # weight (in, out, 4, 4); stride 2, padding 1: taps 1:3 = nearest 2× upsampling
        conv.weight[:, channel] = 0
        conv.weight[previous] = 0
        conv.weight[previous, channel, 1:3, 1:3] = 1
        _set_bias(block, channel, 0.0)
    out = planted.to_image.conv
    out.weight[channels[-1]] = 0
    out.weight[channels[-1], :, 1:3, 1:3] = brightness

    side = planted.image_shape[-1]
    cell = side // 4
    blob = torch.zeros(1, 1, side, side, dtype=torch.bool)
    blob[..., position[0] * cell : (position[0] + 1) * cell, position[1] * cell : (position[1] + 1) * cell] = True
    units = {f"{name}.act": channel for name, channel in zip(names, channels, strict=True)}
    return PlantedBlob(planted, units, direction, offset, blob)


def _set_bias(block: nn.Sequential, channel: int, bias: float) -> None:
    """Makes the block's pre-activation of ``channel`` equal conv output + ``bias`` (identity BatchNorm)."""
    norm = getattr(block, "norm", None)
    if isinstance(norm, nn.BatchNorm2d):
        norm.running_mean[channel] = 0
        norm.running_var[channel] = 1 - norm.eps  # sqrt(var + eps) = 1
        norm.weight[channel] = 1
        norm.bias[channel] = bias
    else:
        block.conv.bias[channel] = bias
