"""Checks of the GAN contract shared by the trainer, the callbacks and the explainers (one message each).

The contract (DESIGN.md §3): the generator returns images ``fake`` (B, C, H, W); the discriminator returns
one logit per image, (B, 1). Every code path that relies on it calls these functions, so a model that
breaks it gets the same one-line message wherever it is first used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xai_train.errors import UserError


def shape_text(shape: tuple[int, ...], batch: int) -> str:
    """A shape with the batch axis written ``B`` when it equals ``batch``: ``(B, 2)``.

    Example:
        >>> shape_text((4, 2), 4), shape_text((4,), 4), shape_text((3, 1), 4)
        ('(B, 2)', '(B,)', '(3, 1)')
    """
    dims = [str(d) for d in shape]
    if dims and shape[0] == batch:
        dims[0] = "B"
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def check_discriminator_output(logits: Tensor, batch: int) -> None:
    """Raises a UserError unless ``logits`` has shape (B, 1) for a batch of ``batch`` images.

    Args:
        logits: what the discriminator returned.
        batch: B, the number of images it was given.

    Raises:
        UserError: ``the discriminator must return (B, 1) logits, got (B, 2)`` (with B = ``batch``).

    Example:
        >>> import torch
        >>> check_discriminator_output(torch.zeros(4, 1), 4)
        >>> check_discriminator_output(torch.zeros(4, 2), 4)
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: the discriminator must return (B, 1) logits, got (B, 2) (B = 4)
    """
    shape = tuple(logits.shape)
    if shape != (batch, 1):
        raise UserError(f"the discriminator must return (B, 1) logits, got {shape_text(shape, batch)} (B = {batch})")


def check_generator_output(fake: Tensor) -> None:
    """Raises a UserError unless ``fake`` is a non-empty floating batch of images (B, C, H, W).

    Args:
        fake: the generator output.

    Raises:
        UserError: naming the shape, e.g. a flat (B, 784) output that should be reshaped to images.

    Example:
        >>> import torch
        >>> try:
        ...     check_generator_output(torch.zeros(2, 784))
        ... except UserError as err:
        ...     print(str(err).split(";")[0])
        the generator output `fake` must be images (B, C, H, W), got (B, 784) (B = 2)
    """
    batch = fake.shape[0] if fake.dim() else 0
    if fake.dim() != 4:
        hint = ""
        if fake.dim() == 2:
            hint = "; reshape it to images first, e.g. einops.rearrange(fake, 'b (c h w) -> b c h w', c=1, h=28)"
        raise UserError(
            f"the generator output `fake` must be images (B, C, H, W), got {shape_text(tuple(fake.shape), batch)} "
            f"(B = {batch}){hint}"
        )
    if batch == 0 or not fake.is_floating_point():
        raise UserError(
            f"the generator output `fake` must be a non-empty float batch (B, C, H, W), got shape "
            f"{tuple(fake.shape)} of dtype {fake.dtype}"
        )


def check_finite(values: Tensor, what: str, hint: str) -> None:
    """Raises a one-line UserError if the batch ``values`` (B, ...) holds NaN or Inf, counting the samples.

    Args:
        values: (B, ...) tensor; integer tensors always pass.
        what: what ``values`` are, for the message (``"attribute(): the images"``).
        hint: what would be right.

    Example:
        >>> import torch
        >>> check_finite(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "the images", "clean them")
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: the images contain NaN or Inf in 1 of 2 samples (first: sample 0); clean them
    """
    if not values.is_floating_point() or values.numel() == 0:
        return
    bad = ~torch.isfinite(values.detach()).reshape(values.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise UserError(
            f"{what} contain NaN or Inf in {int(bad.sum())} of {len(bad)} samples (first: sample {first}); {hint}"
        )
