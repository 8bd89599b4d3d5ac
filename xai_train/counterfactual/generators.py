"""Generators as decoders ``z -> image``, their inverses, and loading a trained GAN run.

A counterfactual search needs ``decode(z)`` and a starting latent ``z₀ = encode(x)``:

* :class:`FlowDecoder` — a :class:`~xai_train.counterfactual.flow.RealNVP` on low-resolution images followed
  by the dataset's own (linear) upsampling; ``encode`` is exact for images the dataset produced (the
  upsampling's pseudo-inverse, then the flow's forward pass).
* :class:`GANDecoder` — a GAN generator in eval mode; ``encode`` runs :func:`invert_generator` (Adam, the
  paper's stopping rule).
"""

from __future__ import annotations

import dataclasses

import torch
from einops import rearrange
from torch import Tensor, nn

from xai_train.counterfactual.flow import RealNVP
from xai_train.data.convert import resize


class LatentDecoder(nn.Module):
    """Base class: ``decode`` latents (B, *latent_shape) to images (B, C, H, W) in [-1, 1].

    Attributes:
        exact_inverse: True if ``encode`` is exact (a flow), False if it is an optimisation (a GAN).

    Example:
        >>> LatentDecoder().exact_inverse
        False
    """

    exact_inverse: bool = False

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, images: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no inverse; pass latents instead of images")


class FlowDecoder(LatentDecoder):
    """A flow on (C, h, w) images, optionally upsampled to (C, S, S) by :func:`xai_train.data.convert.resize`.

    Args:
        flow: a RealNVP with ``dim = C·h·w``.
        shape: (C, h, w) of the images the flow models ((1, 8, 8) for the digits; (1, 1, 2) for 2-D points).
        image_size: side S of the images the classifier sees; ``None`` = no resizing.

    Example:
        >>> decoder = FlowDecoder(RealNVP(16, num_couplings=2, hidden=8), shape=(1, 4, 4), image_size=8)
        >>> x = decoder.decode(torch.randn(2, 16))
        >>> x.shape, torch.allclose(decoder.decode(decoder.encode(x)), x, atol=1e-4)
        (torch.Size([2, 1, 8, 8]), True)
    """

    exact_inverse = True

    def __init__(self, flow: RealNVP, shape: tuple[int, int, int], image_size: int | None = None) -> None:
        super().__init__()
        channels, height, width = shape
        if flow.dim != channels * height * width:
            raise ValueError(
                f"FlowDecoder: the flow models {flow.dim} values but shape {tuple(shape)} has "
                f"{channels * height * width}"
            )
        self.flow, self.shape = flow, tuple(shape)
        self.out_shape = self.shape if image_size is None else (channels, image_size, image_size)
        basis = rearrange(torch.eye(flow.dim), "d (c h w) -> d c h w", c=channels, h=height)
        upsample = basis if image_size is None else resize(basis, image_size)  # the dataset's linear map
        upsample = rearrange(upsample, "d c h w -> d (c h w)")
        self.register_buffer("upsample", upsample)
        self.register_buffer("downsample", torch.linalg.pinv(upsample))  # exact on the upsampling's range

    def decode(self, z: Tensor) -> Tensor:
        """(B, D) latents -> (B, C, S, S) images."""
        channels, height, _ = self.out_shape
        return rearrange(self.flow.inverse(z) @ self.upsample, "b (c h w) -> b c h w", c=channels, h=height)

    def encode(self, images: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, D) latents (exact for upsampled low-resolution images)."""
        return self.flow(self.low_resolution(images))[0]

    def low_resolution(self, images: Tensor) -> Tensor:
        """The (B, C·h·w) vectors the flow models, e.g. to train it on a dataset's images."""
        return rearrange(images, "b c h w -> b (c h w)") @ self.downsample


@dataclasses.dataclass
class Inversion:
    """What :func:`invert_generator` found.

    Attributes:
        latents: (B, latent_dim).
        mse: (B,) final reconstruction MSE per image.
        steps: (B,) steps each image took (the cap where it did not converge).

    Example:
        >>> Inversion(torch.zeros(1, 2), torch.zeros(1), torch.zeros(1, dtype=torch.long)).steps.tolist()
        [0]
    """

    latents: Tensor
    mse: Tensor
    steps: Tensor


def invert_generator(
    generator: nn.Module,
    images: Tensor,
    latent_dim: int,
    *,
    lr: float = 0.1,
    mse_tol: float = 1e-2,
    max_steps: int = 5000,
    seed: int = 0,
    progress: bool = False,
) -> Inversion:
    """z₀ ≈ G⁻¹(x): Adam on z minimising the per-image MSE ‖G(z) − x‖²; an image stops once its MSE < ``mse_tol``.

    The defaults are the Dombrowski et al. rule (lr 0.1 until MSE < 1e-2, at most 5000 steps). All images are
    optimised as one batch; a converged image keeps its latent (masked update), so the result does not depend
    on the batch it came in. G must be in eval mode (BatchNorm with running statistics).

    Args:
        generator: G, (B, latent_dim) -> (B, C, H, W).
        images: (B, C, H, W) targets in [-1, 1].
        latent_dim: length of G's latent vector.
        lr: Adam learning rate.
        mse_tol: stop an image once its MSE is below this.
        max_steps: step cap.
        seed: the starting latents (standard normal).
        progress: show a tqdm bar.

    Returns:
        The latents, final MSEs and steps.

    Example:
        >>> G = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 2, 2)))
        >>> inv = invert_generator(G, G(torch.ones(3, 2)).detach(), 2, max_steps=300, mse_tol=1e-4)
        >>> bool((inv.mse < 1e-4).all())
        True
    """
    from tqdm.auto import tqdm

    start = torch.randn(images.shape[0], latent_dim, generator=torch.Generator().manual_seed(seed))
    z = start.to(images.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    steps = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    with torch.enable_grad():
        for _ in tqdm(range(max_steps), desc="invert", disable=not progress):
            rows = active.nonzero()[:, 0]  # converged images leave the batch
            mse = ((generator(z[rows]) - images[rows]) ** 2).flatten(1).mean(dim=1)
            done = mse.detach() < mse_tol
            active[rows[done]] = False
            if not active.any():
                break
            before = z.detach().clone()
            optimizer.zero_grad(set_to_none=True)
            mse[~done].sum().backward()
            optimizer.step()
            with torch.no_grad():
                z.copy_(torch.where(active[:, None], z, before))
            steps += active.long()
        with torch.no_grad():
            mse = ((generator(z) - images) ** 2).flatten(1).mean(dim=1)
    return Inversion(z.detach(), mse, steps)


class GANDecoder(LatentDecoder):
    """A GAN generator (eval mode, frozen) as a decoder; ``encode`` = :func:`invert_generator`.

    Args:
        generator: G with a ``latent_dim`` attribute.
        max_steps: step cap of the inversion (5000 in the paper; lower it on a CPU).
        lr: inversion learning rate.
        mse_tol: inversion stopping MSE.
        progress: show a tqdm bar while inverting.

    Example:
        >>> from xai_train.models import build_gan
        >>> G, _ = build_gan("dcgan", image_size=32, channels=1, g_width=4)
        >>> GANDecoder(G).decode(torch.zeros(2, G.latent_dim)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        generator: nn.Module,
        max_steps: int = 5000,
        lr: float = 0.1,
        mse_tol: float = 1e-2,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.generator = generator.eval().requires_grad_(False)
        self.latent_dim = int(generator.latent_dim)
        self.max_steps, self.lr, self.mse_tol, self.progress = max_steps, lr, mse_tol, progress
        self.last_inversion: Inversion | None = None

    def train(self, mode: bool = True) -> GANDecoder:
        super().train(mode)
        self.generator.eval()  # running BatchNorm statistics: each image independent of its batch
        return self

    def decode(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def encode(self, images: Tensor) -> Tensor:
        self.last_inversion = invert_generator(
            self.generator,
            images,
            self.latent_dim,
            lr=self.lr,
            mse_tol=self.mse_tol,
            max_steps=self.max_steps,
            progress=self.progress,
        )
        return self.last_inversion.latents
