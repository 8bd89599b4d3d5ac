"""The FAM attention processor: identity cases, a direct re-implementation, removal."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from xai_train.diffusion.models import build_unet
from xai_train.diffusion.self_refine import FamAttention, attention_blocks


def attention_unet(seed: int = 0):
    torch.manual_seed(seed)
    unet = build_unet(16, 1, (16, 32), attention=True)  # Attn down/up blocks + the mid block at 8x8
    for p in unet.parameters():  # diffusers zero-inits nothing here, but perturb so every path matters
        p.data.add_(0.01 * torch.randn_like(p))
    return unet


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 16, 16, generator=g), torch.tensor([1, 50, 900])


def test_every_attention_block_gets_the_processor_and_removal_restores_the_originals():
    unet = attention_unet()
    blocks = attention_blocks(unet)
    originals = {name: block.processor for name, block in blocks.items()}
    assert len(blocks) == 4
    fam_attention = FamAttention(unet).install()
    assert all(type(b.processor).__name__ == "FamAttnProcessor" for b in blocks.values())
    assert len(fam_attention.projections) == 4
    assert not any(name.endswith("processor") for name, _ in unet.named_modules())  # proj nets are not UNet modules
    fam_attention.remove()
    assert all(blocks[name].processor is originals[name] for name in blocks)


@pytest.mark.parametrize("case", ["no_fam", "weight_zero", "eval_mode", "fam_zero_no_bias"])
def test_identity_cases_give_the_unmodified_unet_bitwise(case):
    unet = attention_unet()
    x, t = inputs()
    if case == "eval_mode":
        unet.eval()
    reference = unet(x, t).sample
    fam_attention = FamAttention(
        unet, weight=0.0 if case == "weight_zero" else 0.5, bias=case != "fam_zero_no_bias"
    ).install()
    if case != "no_fam":
        g = torch.Generator().manual_seed(2)
        fam_attention.fam = (
            torch.zeros(1, 1, 16, 16) if case == "fam_zero_no_bias" else torch.rand(1, 1, 16, 16, generator=g)
        )
    assert torch.equal(unet(x, t).sample, reference)


def direct_attention(block, hidden, fam, proj, weight):
    """Self-attention of a UNet2DModel block written out: GroupNorm, q/k/v, k,v *= 1 + w·resize(proj(F)), softmax."""
    batch, channels, height, width = hidden.shape
    h = block.group_norm(hidden).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = block.to_q(h), block.to_k(h), block.to_v(h)
    factor = F.interpolate(proj(fam), size=(height, width), mode="bilinear", align_corners=False)
    factor = 1 + weight * factor.flatten(2).transpose(1, 2)  # (1 or B, N, 1)
    k, v = k * factor, v * factor
    heads = block.heads
    d = channels // heads
    q, k, v = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (q, k, v))
    attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = rearrange(attention @ v, "b h n d -> b n (h d)")
    out = block.to_out[0](out).transpose(1, 2).reshape(batch, channels, height, width)
    return (out + hidden) / block.rescale_output_factor


@pytest.mark.parametrize("per_sample", [False, True])
def test_processor_equals_a_direct_reimplementation(per_sample):
    unet = attention_unet()
    block = unet.mid_block.attentions[0]
    fam_attention = FamAttention(unet, weight=0.3).install()
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 32, 8, 8, generator=g)
    fam = torch.rand(2 if per_sample else 1, 1, 16, 16, generator=g)
    fam_attention.fam = fam
    proj = fam_attention.projections["mid_block__attentions__0"]
    expected = direct_attention(block, hidden, fam, proj, 0.3)
    got = block(hidden)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plain = direct_attention(block, hidden, fam, lambda f: torch.zeros_like(f), 0.3)
    assert (got - plain).abs().max() > 1e-3  # the modulation is not negligible at w = 0.3


def test_projection_gets_gradients_through_the_unet():
    unet = attention_unet()
    x, t = inputs()
    fam_attention = FamAttention(unet, weight=0.5).install()
    fam_attention.fam = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    unet(x, t).sample.square().mean().backward()
    grads = [p.grad for p in fam_attention.projections.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
