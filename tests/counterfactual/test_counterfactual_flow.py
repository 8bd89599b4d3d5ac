import torch
from torch.func import jacrev

from xai_train.counterfactual import FlowDecoder, RealNVP, checkerboard
from xai_train.data import build_dataset


def _randomised_flow(dim: int, seed: int = 0) -> RealNVP:
    torch.manual_seed(seed)
    flow = RealNVP(dim, num_couplings=4, hidden=16, mask=checkerboard(2, dim // 2))
    for param in flow.parameters():  # the zero-initialised last layers would make every coupling the identity
        torch.nn.init.normal_(param, std=0.3)
    return flow.eval()


def test_inverse_is_exact_and_logdet_matches_autograd():
    flow = _randomised_flow(6)
    x = torch.randn(3, 6, dtype=torch.float64)
    flow = flow.double()
    z, logdet = flow(x)
    assert not torch.allclose(z, x)  # the flow does something
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-10, rtol=0)
    for i in range(3):
        jacobian = jacrev(lambda v: flow(v[None])[0][0])(x[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jacobian).logabsdet, atol=1e-9, rtol=0)


def test_log_prob_is_a_normalised_density_in_2d():
    # ∫ p(x) dx over a grid wide enough to hold the mass ≈ 1 (a wrong log-det would miss it by far).
    flow = _randomised_flow(2, seed=3).double()
    side = torch.linspace(-12, 12, 481, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (side[1] - side[0]) ** 2
    assert abs(float(mass) - 1) < 0.02


def test_flow_decoder_encode_is_exact_on_the_dataset_images():
    # The digits are 8×8 upsampled to 16×16 by the dataset; encode undoes the upsampling exactly.
    low = build_dataset("digits", image_size=8).images[:10]
    high = build_dataset("digits", image_size=16).images[:10]
    decoder = FlowDecoder(_randomised_flow(64), shape=(1, 8, 8), image_size=16)
    torch.testing.assert_close(decoder.low_resolution(high), low.flatten(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(decoder.decode(decoder.encode(high)), high, atol=1e-4, rtol=0)


def test_flow_round_trips_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    flow = _randomised_flow(64)
    save_file(flow.state_dict(), str(tmp_path / "flow.safetensors"))  # shared mask storage would be refused
    loaded = RealNVP(64, num_couplings=4, hidden=16, mask=checkerboard(2, 32))
    loaded.load_state_dict(load_file(tmp_path / "flow.safetensors"))
    x = torch.randn(3, 64)
    torch.testing.assert_close(loaded.eval()(x)[0], flow(x)[0], atol=0, rtol=0)
