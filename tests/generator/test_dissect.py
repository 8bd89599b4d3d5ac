"""Known answers for GAN Dissection: a unit that copies a concept mask, and a planted blob unit."""

import torch
from torch import nn

from xai_train.data import make_shapes
from xai_train.generator.dissection import add_unit_effects, causal_effects, dissect
from xai_train.generator.iou import iou_from_counts, overlap_counts

CONCEPTS = ("circle", "square", "triangle")


class CopyConceptGenerator(nn.Module):
    """Units 0-2 copy the circle/square/triangle mask of a shapes image (scaled by 1-2), unit 3 is a
    square at a random place (independent of the concepts); the image shows units 0-2 colour-coded."""

    latent_dim = 4

    def __init__(self, size: int = 16):
        super().__init__()
        shapes = make_shapes(64, image_size=size, seed=0)
        bank = torch.zeros(64, 3, size, size)
        bank[torch.arange(64), shapes.labels] = shapes.masks[:, 0]
        self.register_buffer("bank", bank)
        self.units = nn.Identity()

    def forward(self, z):
        size = self.bank.shape[-1]
        index = (z[:, 0].abs() * 1e4).long() % len(self.bank)
        concept = self.bank[index] * (1 + torch.sigmoid(z[:, 1])).view(-1, 1, 1, 1)
        grid = torch.arange(size)
        corner = ((torch.sigmoid(z[:, 2:]) * (size - 6)).long()).view(-1, 2, 1)
        inside = ((grid >= corner) & (grid < corner + 6)).float()  # (B, 2, size)
        noise = (inside[:, 0, :, None] * inside[:, 1, None, :]).unsqueeze(1) * 1.5
        units = self.units(torch.cat([concept, noise], dim=1))
        return (units[:, :3] > 0).float() * 2 - 1


def colour_segmenter(images):
    return images > 0  # channel c is bright exactly where concept c is drawn


def test_a_unit_copying_a_concept_has_iou_one_and_causal_effect_one():
    G = CopyConceptGenerator()
    z = torch.randn(600, 4, generator=torch.Generator().manual_seed(0))
    result, _, units = dissect(G, "units", z, colour_segmenter, CONCEPTS, threshold="iqr", mode="nearest")
    for unit in range(3):
        assert result.iou[unit, unit] > 0.99
        assert result.iou[unit, [c for c in range(3) if c != unit]].max() == 0  # never drawn together
    # the independent unit: IoU at chance, i.e. the IoU against the masks of other (shuffled) samples
    held = len(z) - result.num_samples
    masks = colour_segmenter(G(z))[held:]
    chance = iou_from_counts(overlap_counts(units[held:, 3:], masks.roll(1, dims=0), result.thresholds[3:], "nearest"))
    torch.testing.assert_close(result.iou[3], chance[0], atol=0.03, rtol=0.3)
    assert result.iou[3].max() < 0.25 * result.iou[0, 0]
    result = add_unit_effects(result, G, z[:100], colour_segmenter)
    for unit in range(3):
        assert result.ablate[unit, unit] == 1.0  # ablating the unit removes its concept entirely
        assert result.ablate[unit].sum() == 1.0  # ... and nothing else
        assert result.ace[unit, unit] > 1.0  # inserting it everywhere paints the whole image
    assert result.ablate[3].abs().max() == 0  # the independent unit draws nothing
    rows = result.ranking()
    assert {row["unit"] for row in rows[:3]} == {0, 1, 2} and rows[-1]["unit"] == 3


def test_dissection_ranks_the_planted_blob_unit_first(planted, blob_segmenter):
    z = torch.randn(400, 100, generator=torch.Generator().manual_seed(1))
    segmenter = blob_segmenter
    for layer in ("project.act", "upsample.0.act"):
        result, _, _ = dissect(planted.generator, layer, z, segmenter, ["blob"])
        ranking = result.ranking()
        assert ranking[0]["unit"] == planted.units[layer]
        # bilinear upsampling of a 4×4 / 8×8 map blurs the edge of the 8×8 blob: IoU ~0.6-0.7, not 1
        assert ranking[0]["iou"] > 0.45 and ranking[1]["iou"] < 0.1
    effects = causal_effects(
        planted.generator, "upsample.0.act", z[:200], segmenter, [[planted.units["upsample.0.act"]], [0], [3]],
        result.insert_values,
    )  # fmt: skip
    assert effects["share"][0] > 0  # some samples show the blob
    assert effects["ablate"][0, 0] == 1.0  # ablating the planted unit removes every blob
    assert effects["ablate"][1:, 0].abs().max() < 0.2  # random units do not


def test_the_dissection_module_is_not_shadowed_by_the_dissect_function():
    import importlib
    import types

    import xai_train.generator
    import xai_train.generator.dissection as module

    assert isinstance(module, types.ModuleType) and module.__name__ == "xai_train.generator.dissection"
    assert importlib.import_module("xai_train.generator.dissection") is module
    assert xai_train.generator.dissect is module.dissect and callable(xai_train.generator.dissect)
    assert xai_train.generator.dissection is module  # the package attribute is the module, not the function
