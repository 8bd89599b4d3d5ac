import torch
from torch import nn

from xai_train.diffusion.discriminator import TimeConditionedDiscriminator, r1_penalty


def test_output_depends_on_t_and_has_no_batch_coupling():
    torch.manual_seed(0)
    d = TimeConditionedDiscriminator(in_channels=1, channels=(8, 16), time_dim=16)
    x = torch.randn(3, 1, 16, 16)
    t = torch.tensor([0, 300, 999])
    out = d(x, t)
    assert out.shape == (3, 1)
    assert not torch.allclose(out, d(x, t.flip(0)))
    torch.testing.assert_close(out[2:], d(x[2:], t[2:]))
    torch.testing.assert_close(d(x, torch.tensor(300)), d(x, torch.full((3,), 300)))


def test_explainer_friendly_structure():
    d = TimeConditionedDiscriminator()
    modules = list(d.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    activations = [m for m in modules if isinstance(m, nn.LeakyReLU)]
    assert activations and not any(getattr(m, "inplace", False) for m in activations)
    # every activation module is used once (DeepLift needs one module per non-linearity)
    assert len({id(m) for m in activations}) == len(activations)


def test_save_and_load_pretrained(tmp_path):
    d = TimeConditionedDiscriminator(in_channels=3, channels=(8,), time_dim=8, num_train_timesteps=100)
    d.save_pretrained(tmp_path)
    loaded = TimeConditionedDiscriminator.from_pretrained(tmp_path)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 99])
    torch.testing.assert_close(loaded(x, t), d(x, t))


def test_r1_value():
    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    weight = torch.randn(1, 1, 4, 4)
    logits = (x * weight).sum(dim=(1, 2, 3)).unsqueeze(1)
    torch.testing.assert_close(r1_penalty(logits, x), weight.square().sum())


def test_r1_penalty_is_differentiable_in_d_weights():
    d = TimeConditionedDiscriminator(in_channels=1, channels=(8,), time_dim=8)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    r1_penalty(d(x, torch.tensor([0, 1])), x).backward()
    assert d.stem.weight.grad is not None and float(d.stem.weight.grad.abs().sum()) > 0
