"""AttFind (StylEX, Lang et al. 2021) on the channels of any generator layer.

StylEX shifts each *style coordinate* of a StyleGAN2 trained with the classifier in the loop; full StylEX
training (StyleGAN2 + encoder + LPIPS) is out of scope here. AttFind itself only needs a generator and a
layer: for every channel k, shift its activation map so that its spatial mean goes to the channel's dataset
minimum or maximum, regenerate, and record how the classifier's logits change. Then (the authors' Colab):

1. drop *unstable* images, those on which too many (channel, direction) shifts move the logit by more than
   ``threshold`` (authors: more than 750 of ~6000 style coordinates over |effect| 2);
2. greedily pick ``top_k`` (8 in the Colab) channels: each time the (channel, direction) with the largest
   mean effect on the target logit over the images not yet explained; an image counts as explained once a
   picked shift moves its target logit by more than ``threshold`` (our reading of the Colab).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from einops import reduce, repeat
from torch import Tensor, nn

DIRECTIONS: tuple[str, ...] = ("up", "down")
"""Index 0: shift to the channel's dataset maximum; 1: to its minimum."""


@contextlib.contextmanager
def _added(layer: nn.Module, offset: Tensor | None, record: list[Tensor] | None = None) -> Iterator[None]:
    """Adds ``offset`` (B, K, 1, 1) to ``layer``'s output for the duration (and/or records the output)."""

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor | None:
        if record is not None:
            record.append(output.detach())
        return None if offset is None else output + offset

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def channel_ranges(generator: nn.Module, layer: nn.Module, latents: Tensor, batch_size: int = 256) -> Tensor:
    """Per-channel dataset minimum and maximum of the spatial mean of ``layer``'s output over ``latents``.

    Args:
        generator: G, latents -> images.
        layer: a module inside G whose output is (B, K, h, w) (or (B, K)).
        latents: (N, latent_dim) samples that stand for the dataset.
        batch_size: latents per forward pass.

    Returns:
        (2, K): row 0 the minima, row 1 the maxima.

    Example:
        >>> G = nn.Sequential(nn.Linear(2, 3), nn.Unflatten(1, (3, 1, 1)))
        >>> channel_ranges(G, G[0], torch.eye(2)).shape
        torch.Size([2, 3])
    """
    means = []
    for chunk in latents.split(batch_size):
        record: list[Tensor] = []
        with _added(layer, None, record):
            generator(chunk)
        means.append(_spatial_mean(record[0]))
    means = torch.cat(means)
    return torch.stack([means.min(dim=0).values, means.max(dim=0).values])


def _spatial_mean(activation: Tensor) -> Tensor:
    return activation if activation.ndim == 2 else reduce(activation, "b k ... -> b k", "mean")


@torch.no_grad()
def channel_effects(
    generator: nn.Module,
    layer: nn.Module,
    classifier: nn.Module,
    latents: Tensor,
    ranges: Tensor,
    *,
    chunk_size: int = 512,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Logit changes of the classifier when each channel is shifted to its dataset max ("up") or min ("down").

    Args:
        generator: G (eval mode).
        layer: the shifted layer inside G.
        classifier: f, images -> logits (B, C) (eval mode).
        latents: (N, latent_dim) the images to explain.
        ranges: (2, K) from :func:`channel_ranges`.
        chunk_size: (image, channel, direction) triples per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``(effects, logits)``: effects (N, K, 2, C) = f(G_shifted(z)) − f(G(z)); logits (N, C) = f(G(z)).

    Example:
        >>> G = nn.Sequential(nn.Linear(2, 3), nn.Unflatten(1, (3, 1, 1)))
        >>> f = nn.Flatten()
        >>> z = torch.eye(2)
        >>> effects, _ = channel_effects(G, G[0], f, z, channel_ranges(G, G[0], z))
        >>> effects.shape
        torch.Size([2, 3, 2, 3])
    """
    from tqdm.auto import tqdm

    record: list[Tensor] = []
    with _added(layer, None, record):
        logits = classifier(generator(latents))
    means = _spatial_mean(record[0])  # (N, K)
    num, channels = means.shape
    extra = [1] * (record[0].ndim - 2)
    triples = torch.cartesian_prod(torch.arange(num), torch.arange(channels), torch.arange(2))  # (N·K·2, 3)
    effects = torch.empty(num * channels * 2, logits.shape[1])
    for start in tqdm(range(0, len(triples), chunk_size), desc="attfind", disable=not progress):
        image, channel, direction = triples[start : start + chunk_size].unbind(dim=1)
        offset = torch.zeros(len(image), channels)
        target = ranges[1 - direction, channel]  # up -> max (row 1), down -> min (row 0)
        offset[torch.arange(len(image)), channel] = target - means[image, channel]
        with _added(layer, offset.reshape(len(image), channels, *extra).to(latents.device)):
            shifted = classifier(generator(latents[image]))
        effects[start : start + len(image)] = (shifted - logits[image]).cpu()
    return effects.reshape(num, channels, 2, -1), logits


@dataclasses.dataclass
class AttFindResult:
    """The attributes AttFind picked for one target class.

    Attributes:
        channels: (k,) picked channels, in order.
        directions: (k,) 0 = "up" (to the max), 1 = "down" (to the min).
        mean_effects: (k,) mean target-logit change over the images not yet explained when it was picked.
        explained: (k,) how many images each pick explained.
        stable: (N,) bool, images kept by the stability filter.

    Example:
        >>> attfind(torch.zeros(2, 3, 2, 1), 0, top_k=1).stable.tolist()
        [True, True]
    """

    channels: Tensor
    directions: Tensor
    mean_effects: Tensor
    explained: Tensor
    stable: Tensor


def attfind(
    effects: Tensor, target: int, *, top_k: int = 8, threshold: float = 2.0, max_unstable: float = 0.125
) -> AttFindResult:
    """Greedy AttFind selection from :func:`channel_effects` for one target class.

    Args:
        effects: (N, K, 2, C) logit changes.
        target: the class whose logit the attributes should raise.
        top_k: attributes to pick (the Colab's 8).
        threshold: |logit change| that counts as a large effect (the Colab's 2), both for the stability filter
            and for "explained".
        max_unstable: an image is dropped when more than this share of its 2K shifts have a large effect on
            the target logit (the Colab: 750 of ~6000 coordinates ≈ 0.125).

    Returns:
        An :class:`AttFindResult` (fewer than ``top_k`` picks when K is smaller).

    Example:
        >>> effects = torch.zeros(4, 8, 2, 2)
        >>> effects[:, 1, 0, 1] = 5.0  # channel 1 shifted up raises class 1
        >>> attfind(effects, 1, top_k=2).channels.tolist()
        [1, 0]
    """
    num, channels = effects.shape[:2]
    if not 0 <= target < effects.shape[3]:
        raise ValueError(f"unknown target class {target!r}: the classifier has classes 0..{effects.shape[3] - 1}")
    change = effects[..., target]  # (N, K, 2)
    large = reduce((change.abs() > threshold).float(), "n k d -> n", "mean")
    stable = large <= max_unstable
    remaining = stable.clone()
    taken = torch.zeros(channels, dtype=torch.bool)
    picks, directions, means, explained = [], [], [], []
    for _ in range(min(top_k, channels)):
        pool = remaining if remaining.any() else stable  # all explained: rank on every stable image
        score = reduce(change[pool], "n k d -> k d", "mean") if pool.any() else torch.zeros(channels, 2)
        score[taken] = -torch.inf
        flat = int(score.flatten().argmax())
        channel, direction = divmod(flat, 2)
        now = remaining & (change[:, channel, direction] > threshold)
        picks.append(channel), directions.append(direction), means.append(float(score[channel, direction]))
        explained.append(int(now.sum()))
        remaining &= ~now
        taken[channel] = True
    return AttFindResult(
        torch.tensor(picks), torch.tensor(directions), torch.tensor(means), torch.tensor(explained), stable
    )


@torch.no_grad()
def shifted_images(
    generator: nn.Module, layer: nn.Module, latents: Tensor, ranges: Tensor, channel: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The images of ``latents`` as generated, with ``channel`` shifted up (to its max) and down (to its min).

    Returns:
        ``(original, up, down)``, each (B, C, H, W).

    Example:
        >>> G = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 2, 2)))
        >>> z = torch.eye(2)
        >>> [t.shape[0] for t in shifted_images(G, G[0], z, channel_ranges(G, G[0], z), 3)]
        [2, 2, 2]
    """
    record: list[Tensor] = []
    with _added(layer, None, record):
        original = generator(latents)
    means = _spatial_mean(record[0])
    extra = [1] * (record[0].ndim - 2)
    out = []
    for row in (1, 0):  # up: the max, down: the min
        offset = torch.zeros_like(means)
        offset[:, channel] = ranges[row, channel] - means[:, channel]
        with _added(layer, offset.reshape(*offset.shape, *extra)):
            out.append(generator(latents))
    return original, out[0], out[1]


def planted_blob_generator(num_channels: int = 8, planted: int = 3, size: int = 16, seed: int = 0) -> nn.Module:
    """A toy generator for AttFind's known answer: channel ``planted`` of its ``features`` layer draws a blob.

    ``features`` maps z (B, num_channels) to (B, K, size, size) maps; the image is tanh of the sum of each
    channel times a fixed pattern: random stripes for every channel, plus a central Gaussian blob for the
    planted one (the other channels' stripes fade out where the blob is).

    Example:
        >>> G = planted_blob_generator()
        >>> G(torch.zeros(2, 8)).shape
        torch.Size([2, 1, 16, 16])
    """
    return _PlantedBlob(num_channels, planted, size, seed)


class _PlantedBlob(nn.Module):
    def __init__(self, num_channels: int, planted: int, size: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.latent_dim, self.size = num_channels, size
        self.features = nn.Sequential(nn.Linear(num_channels, num_channels), nn.Tanh())
        with torch.no_grad():
            self.features[0].weight.copy_(
                torch.eye(num_channels) + 0.1 * torch.randn(num_channels, num_channels, generator=generator)
            )
            self.features[0].bias.zero_()
        coords = torch.linspace(-1, 1, size)
        blob = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / 0.1)
        stripes = (
            torch.sin(
                torch.randn(num_channels, 1, 1, generator=generator) * 6 * coords[None, :, None]
                + torch.rand(num_channels, 1, 1, generator=generator) * 6
            )
            * 0.3
        )
        patterns = stripes.expand(num_channels, size, size) * (1 - blob)  # the others stay off the centre
        patterns[planted] = 1.5 * blob
        self.register_buffer("patterns", patterns)
        self.register_buffer("blob", blob)

    def forward(self, z: Tensor) -> Tensor:
        maps = repeat(self.features(z), "b k -> b k h w", h=self.size, w=self.size)
        return torch.tanh((maps * self.patterns).sum(dim=1, keepdim=True))
