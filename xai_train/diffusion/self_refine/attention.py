"""The reverse-process half of self-refining diffusion: a diffusers attention processor that scales the keys
and values of every self-attention block of a ``UNet2DModel`` by ``1 + w_a·proj(FAM)`` (DESIGN.md §9).

``proj`` is a small learned conv net per attention block (Conv 1→8 3×3, ReLU, Conv 8→8 3×3, ReLU, Conv 8→1 1×1,
the authors' "legacy attention order" variant), applied to the flaw activation map at image resolution and
resized bilinearly to the block's resolution. As in the authors' code the modulation acts in training only:
in eval mode (sampling, export) or without a FAM the processor hands the call to the block's original
processor, so the sampled model is the plain UNet.

The projections are NOT registered inside the UNet (the processor is a plain object holding a reference), so
the UNet's parameters, state dict, EMA and exported pipeline are exactly those of a plain UNet; the owner of
:class:`FamAttention` (the callback) trains ``projections`` with its own optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor, nn


class FamProjection(nn.Sequential):
    """``proj``: (N, 1, H, W) FAM → (N, 1, H, W) modulation (no output non-linearity: it may be negative).

    Args:
        hidden: channels of the two hidden convs (8 in the authors' code).
        bias: conv biases (True as in the authors' code; False makes ``proj(0) = 0`` exactly).

    Example:
        >>> FamProjection()(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, hidden: int = 8, bias: bool = True):
        super().__init__(
            nn.Conv2d(1, hidden, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 1, bias=bias),
        )


def key_value_scale(fam: Tensor, proj: nn.Module, weight: float, height: int, width: int) -> Tensor:
    """``1 + w_a·resize(proj(FAM))`` as a per-position factor for keys/values of shape (B, heads, h·w, d).

    Args:
        fam: (H, W), (1, 1, H, W) (one map for the batch) or (B, 1, H, W) (one per sample), in [0, 1].
        proj: the block's :class:`FamProjection`.
        weight: ``w_a``.
        height, width: the attention block's resolution (bilinear resize, ``align_corners=False``).

    Returns:
        (1 or B, 1, h·w, 1) factor.

    Example:
        >>> key_value_scale(torch.zeros(8, 8), FamProjection(bias=False), 0.5, 4, 4).unique().tolist()
        [1.0]
    """
    if fam.dim() == 2:
        fam = rearrange(fam, "h w -> 1 1 h w")
    modulation = proj(fam.to(next(proj.parameters()).dtype))
    if tuple(modulation.shape[-2:]) != (height, width):
        modulation = F.interpolate(modulation, size=(height, width), mode="bilinear", align_corners=False)
    return rearrange(1.0 + weight * modulation, "b 1 h w -> b 1 (h w) 1")


class FamAttnProcessor:
    """Scaled-dot-product self-attention (``AttnProcessor2_0``'s computation) with keys and values scaled per
    position by :func:`key_value_scale`. Falls back to ``original`` in eval mode or when no FAM is set.

    Args:
        controller: the :class:`FamAttention` holding the FAM, ``w_a`` and the projections.
        name: the block's module name (key of its projection).
        original: the block's processor before installation (restored by ``FamAttention.remove``).
    """

    def __init__(self, controller: FamAttention, name: str, original: object):
        self.controller = controller
        self.name = name
        self.original = original

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> Tensor:
        fam = self.controller.fam
        if fam is None or not attn.training:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.dim() != 4:
            raise ValueError(
                f"FamAttnProcessor ({self.name}): FAM modulation supports image self-attention only "
                "(4-D hidden states, no encoder states, no mask), as in UNet2DModel"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        batch, channels, height, width = hidden_states.shape
        hidden_states = rearrange(hidden_states, "b c h w -> b (h w) c")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value = (
            rearrange(x, "b n (heads d) -> b heads n d", heads=attn.heads) for x in (query, key, value)
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scale = self.controller.scale(self.name, height, width).to(key.dtype)
        key, value = key * scale, value * scale
        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = rearrange(hidden_states, "b heads n d -> b n (heads d)").to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        hidden_states = rearrange(hidden_states, "b (h w) c -> b c h w", h=height, w=width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_blocks(unet: nn.Module) -> dict[str, Attention]:
    """The self-attention blocks of a diffusers model, by module name (mid block and Attn* blocks).

    Example:
        >>> from xai_train.diffusion.models import build_unet
        >>> list(attention_blocks(build_unet(8, 1, (8, 8), norm_num_groups=4)))
        ['mid_block.attentions.0']
    """
    return {name: module for name, module in unet.named_modules() if isinstance(module, Attention)}


class FamAttention:
    """Installs :class:`FamAttnProcessor` on every attention block of a UNet and holds what they share.

    Args:
        unet: the (unwrapped) ``UNet2DModel``; needs at least one attention block.
        weight: ``w_a`` (0.025 in the authors' code).
        bias: conv biases of the projections.
        seed: initialises the projections without touching the global RNG (equal on every rank).

    Attributes:
        projections: ``nn.ModuleDict`` of one :class:`FamProjection` per block (train it; it is not in the UNet).
        fam: the current FAM ((1, 1, H, W) or (B, 1, H, W)), or ``None`` (plain attention).

    Example:
        >>> from xai_train.diffusion.models import build_unet
        >>> unet = build_unet(8, 1, (8, 8), norm_num_groups=4)
        >>> x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
        >>> before = unet(x, t).sample
        >>> fam_attention = FamAttention(unet, weight=0.5).install()
        >>> fam_attention.fam = torch.rand(1, 1, 8, 8)
        >>> bool(torch.equal(unet(x, t).sample, before))  # train mode: keys and values modulated
        False
        >>> bool(torch.equal(unet.eval()(x, t).sample, before.detach()))  # eval mode: the plain UNet
        True
        >>> fam_attention.remove() is fam_attention
        True
    """

    def __init__(self, unet: nn.Module, weight: float = 0.025, bias: bool = True, seed: int = 0):
        self.unet = unet
        self.blocks = attention_blocks(unet)
        if not self.blocks:
            raise ValueError(
                "FamAttention: the UNet has no attention block; build it with attention (UNet2DModel's mid-block "
                "attention, add_attention=True, or unet.attention=true)"
            )
        self.weight = float(weight)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.projections = nn.ModuleDict({key(name): FamProjection(bias=bias) for name in self.blocks})
        device = next(unet.parameters()).device
        self.projections.to(device)
        self.fam: Tensor | None = None
        self.installed = False

    def scale(self, name: str, height: int, width: int) -> Tensor:
        """The key/value factor of block ``name`` for the current FAM (see :func:`key_value_scale`)."""
        if self.fam is None:
            raise RuntimeError("FamAttention.scale: no FAM set")
        return key_value_scale(self.fam, self.projections[key(name)], self.weight, height, width)

    def install(self) -> FamAttention:
        """Sets the FAM processor on every attention block (idempotent). Returns ``self``."""
        for name, block in self.blocks.items():
            if not isinstance(block.processor, FamAttnProcessor):
                block.set_processor(FamAttnProcessor(self, name, block.processor))
        self.installed = True
        return self

    def remove(self) -> FamAttention:
        """Restores every block's original processor (idempotent). Returns ``self``."""
        for block in self.blocks.values():
            if isinstance(block.processor, FamAttnProcessor):
                block.set_processor(block.processor.original)
        self.installed = False
        return self


def key(name: str) -> str:
    """A module name as a ``ModuleDict`` key (dots are not allowed there)."""
    return name.replace(".", "__")
