import pytest
import torch
from torch import nn

from xai_train.errors import UserError
from xai_train.generator.bake import bake_unit_scale, export_generator
from xai_train.generator.units import UnitEdit, channel_layers, edit_units, find_layer, generate
from xai_train.models import DCGANGenerator, PaperMLPGenerator


def test_unknown_layer_lists_the_valid_names():
    G = DCGANGenerator(32, 1, width=8)
    with pytest.raises(ValueError, match=r"no layer 'upsample\.9\.act'; layers with channel maps: project\.conv"):
        find_layer(G, "upsample.9.act")
    with pytest.raises(ValueError, match="has no layer with \\(B, K, h, w\\) channel maps"):
        find_layer(PaperMLPGenerator(), "project.act")


def test_edit_is_removed_and_rows_edit_independently():
    G = DCGANGenerator(32, 1, width=8).eval()
    z = torch.randn(6, 100)
    before = G(z)
    scale = torch.ones(6, 16)
    scale[torch.arange(6), torch.arange(6)] = 0  # row i ablates unit i
    batched, units = generate(G, z, "upsample.0.act", UnitEdit(scale), batch_size=4)
    for i in range(6):
        single, _ = generate(G, z[i : i + 1], "upsample.0.act", UnitEdit.suppress([i], 16))
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-6)
        assert units[i, i].abs().max() == 0  # the recorded map is the edited one
    assert not any(m._forward_hooks for m in G.modules())
    assert torch.equal(G(z), before)


def test_insertion_sets_the_value_everywhere():
    G = DCGANGenerator(32, 1, width=8).eval()
    edit = UnitEdit(torch.ones(16), torch.full((16,), 3.0), torch.arange(16) == 2)
    _, units = generate(G, torch.randn(3, 100), "upsample.0.act", edit)
    assert torch.equal(units[:, 2], torch.full_like(units[:, 2], 3.0))


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("layer", ["project.act", "upsample.1.act", "upsample.0.conv"])
def test_baked_equals_hooked(norm, layer):
    torch.manual_seed(0)
    G = DCGANGenerator(32, 3, width=8, norm=norm).eval()
    if norm == "batch":  # non-trivial running statistics
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    k = channel_layers(G)[layer][0]
    z = torch.randn(8, 100)
    hard = (torch.rand(k) > 0.3).float()  # ablation: bit-exact
    soft = torch.rand(k)  # soft suppression: float rounding only
    for scale, tolerance in ((hard, 0.0), (soft, 1e-5)):
        hooked, _ = generate(G, z, layer, UnitEdit(scale))
        baked, _ = generate(bake_unit_scale(G, layer, scale), z)
        torch.testing.assert_close(baked, hooked, rtol=0, atol=tolerance)
    assert not torch.equal(generate(G, z)[0], hooked)  # the edit did something


def test_bake_refuses_what_it_cannot_move(tmp_path):
    G = DCGANGenerator(32, 1, width=8)
    with pytest.raises(ValueError, match="Tanh"):
        bake_unit_scale(G, "to_image.act", torch.ones(1))
    with pytest.raises(ValueError, match=">= 0"):
        bake_unit_scale(G, "project.act", -torch.ones(32))
    with pytest.raises(ValueError, match="has 32 units, got 3"):
        bake_unit_scale(G, "project.act", torch.ones(3))


@pytest.mark.slow  # torch.export traces the model: seconds
def test_export_loads_with_plain_torch(tmp_path):
    G = DCGANGenerator(32, 1, width=8).eval()
    scale = torch.ones(16)
    scale[:4] = 0
    baked = bake_unit_scale(G, "upsample.0.act", scale)
    program = torch.export.load(export_generator(baked, tmp_path / "G.pt2")).module()
    z = torch.randn(5, 100)
    with edit_units(G, "upsample.0.act", UnitEdit(scale)):
        assert torch.equal(program(z), G(z))


class Residual(nn.Module):
    """Adds its input back: its output is a new tensor, not its last child's, so it is a layer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))


class NestedG(nn.Module):
    latent_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Unflatten(1, (3, 2, 2)), nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()))
        self.block = Residual()
        self.to_image = nn.Conv2d(3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.block(self.project(z)))


def test_channel_layers_skip_containers_that_repeat_their_last_child():
    layers = channel_layers(NestedG())
    assert list(layers) == ["project.0", "project.1.0", "project.1.1", "block.conv", "block.act", "block", "to_image"]
    assert layers["block"] == (3, 2, 2)
    dcgan = channel_layers(DCGANGenerator(image_size=32, channels=1, width=8))
    assert "project" not in dcgan and "upsample.0" not in dcgan and "upsample" not in dcgan
    assert dcgan["project.act"] == (32, 4, 4)
    with pytest.raises(UserError, match=r"^layer 'project' returns the output of its child 'project.1.1'"):
        find_layer(NestedG(), "project")
    with pytest.raises(UserError, match=r"layer 'project.1' returns the output of its child 'project.1.1'"):
        find_layer(NestedG(), "project.1")
