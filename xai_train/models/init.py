"""Weight initialisation and parameter counting shared by the GAN models.

``dcgan_init_`` is the initialisation of Radford et al. (2016), section 4: every convolution weight
drawn from N(0, 0.02), every BatchNorm scale from N(1, 0.02), every bias set to 0.
"""

from __future__ import annotations

import torch
from torch import nn

DCGAN_INIT_STD = 0.02
"""Standard deviation of the DCGAN initialisation (conv weights and BatchNorm scales)."""

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def dcgan_init_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Apply the DCGAN initialisation in place to every conv and BatchNorm layer of ``module``.

    Convolution and transposed-convolution weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02);
    all their biases = 0. Other layers (``nn.Linear``, ...) keep PyTorch's default initialisation,
    as in the DCGAN reference code.

    Args:
        module: the model (or a single layer); walked recursively.
        generator: optional ``torch.Generator`` for a reproducible draw independent of the global seed.

    Returns:
        The same ``module``, so the call can be chained.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = dcgan_init_(nn.Conv2d(3, 256, 4), generator=torch.Generator().manual_seed(0))
        >>> round(layer.weight.std().item(), 2), layer.bias.abs().max().item()
        (0.02, 0.0)
    """
    for layer in module.modules():
        if isinstance(layer, _CONV_TYPES):
            nn.init.normal_(layer.weight, 0.0, DCGAN_INIT_STD, generator=generator)
        elif isinstance(layer, _NORM_TYPES) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, DCGAN_INIT_STD, generator=generator)
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return module


def num_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Count the scalar parameters of ``module``.

    Args:
        module: any ``nn.Module``.
        trainable_only: count only parameters with ``requires_grad=True``.

    Returns:
        The number of scalars (BatchNorm running statistics are buffers and are not counted).

    Example:
        >>> from torch import nn
        >>> num_parameters(nn.Linear(100, 256))  # 100 * 256 weights + 256 biases
        25856
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
