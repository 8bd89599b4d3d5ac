import torch
from torch import nn

from xai_train.counterfactual.attfind import (
    attfind,
    channel_effects,
    channel_ranges,
    planted_blob_generator,
    shifted_images,
)


class PatternDetector(nn.Module):
    """Two logits (−s, s), s = 4·⟨image, pattern⟩ / ‖pattern‖₁: class 1 = "the pattern is drawn"."""

    def __init__(self, pattern: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pattern", pattern / pattern.abs().sum())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = 4 * (images[:, 0] * self.pattern).sum(dim=(1, 2), keepdim=False)
        return torch.stack([-score, score], dim=1)


def _effects(generator, pattern):
    latents = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    ranges = channel_ranges(generator, generator.features, latents)
    explained = latents[:32]
    return channel_effects(generator, generator.features, PatternDetector(pattern), explained, ranges)[0], ranges


def test_attfind_ranks_the_planted_blob_channel_first():
    generator = planted_blob_generator(num_channels=8, planted=3).eval()
    effects, _ = _effects(generator, generator.blob)
    result = attfind(effects, target=1, top_k=3, threshold=0.5)
    assert result.channels[0].item() == 3 and result.directions[0].item() == 0  # "up": more blob
    assert result.explained[0].item() >= 10  # it explains most of the stable images (15 of 22)
    # The planted channel's mean effect dwarfs every other channel's.
    others = effects[:, [c for c in range(8) if c != 3], :, 1].mean(dim=0).abs().max()
    assert float(result.mean_effects[0]) > 3 * float(others)


def test_attfind_control_follows_the_classifier_not_the_blob():
    # Control: the same generator, a classifier that looks at channel 5's stripes: channel 3 is no longer first,
    # channel 5 is.
    generator = planted_blob_generator(num_channels=8, planted=3).eval()
    effects, _ = _effects(generator, generator.patterns[5])
    result = attfind(effects, target=1, top_k=3, threshold=0.5)
    assert result.channels[0].item() == 5 and 3 not in result.channels[:1].tolist()


def test_channel_effects_equal_a_direct_shift():
    # Independent reference: shift the channel's pre-image by hand and classify.
    generator = planted_blob_generator(num_channels=8, planted=3).eval()
    detector = PatternDetector(generator.blob)
    latents = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    ranges = channel_ranges(generator, generator.features, latents)
    effects, logits = channel_effects(generator, generator.features, detector, latents[:4], ranges, chunk_size=5)
    with torch.no_grad():
        feats = generator.features(latents[:4])
        feats[:, 3] = ranges[0, 3]  # "down": channel 3 at its dataset minimum (the layer output is (B, K))
        maps = feats[:, :, None, None] * generator.patterns
        manual = detector(torch.tanh(maps.sum(dim=1, keepdim=True)))
    torch.testing.assert_close(effects[:, 3, 1], manual - logits, atol=1e-5, rtol=0)
    original, up, down = shifted_images(generator, generator.features, latents[:4], ranges, 3)
    torch.testing.assert_close(detector(down) - detector(original), effects[:, 3, 1], atol=1e-5, rtol=0)
    assert float((up - original).abs().max()) > 0.1


def test_unstable_images_are_dropped():
    effects = torch.zeros(3, 4, 2, 2)
    effects[0, :, :, 1] = 10.0  # every shift moves image 0's logit a lot: unstable
    effects[1:, 2, 1, 1] = 3.0
    result = attfind(effects, 1, top_k=2, threshold=2.0)
    assert result.stable.tolist() == [False, True, True]
    assert (result.channels[0].item(), result.directions[0].item(), result.explained[0].item()) == (2, 1, 2)
