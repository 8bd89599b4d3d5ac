import numpy as np
import pytest
import scipy.linalg
import torch

from xai_train.metrics import (
    frechet_distance,
    frechet_distance_from_features,
    gaussian_stats,
    stats_from_sums,
)


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The pytorch-fid formula with scipy.linalg.sqrtm, as an independent reference."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_covariance(d: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, 2 * d, generator=generator, dtype=torch.float64)
    return a @ a.T / (2 * d) + 0.1 * torch.eye(d, dtype=torch.float64)


def test_set_with_itself_is_zero():
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance_from_features(x, x)) < 1e-8


def test_mean_shift_matches_closed_form_on_samples():
    # x and x + delta have exactly the same covariance, so FD = ||delta||^2 to round-off.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 8, generator=g) @ torch.randn(8, 8, generator=g)
    for scale in (0.1, 1.0, 3.0):
        delta = scale * torch.arange(8.0)
        expected = float(delta.double().square().sum())
        assert frechet_distance_from_features(x, x + delta) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_equal_covariance_gaussians_closed_form():
    sigma = random_covariance(6, torch.Generator().manual_seed(2))
    mu1, mu2 = torch.zeros(6, dtype=torch.float64), torch.full((6,), 0.5, dtype=torch.float64)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(6 * 0.25, abs=1e-9)


def test_diagonal_covariances_closed_form():
    # For diagonal covariances FD = ||dmu||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = torch.tensor([1.0, 4.0, 9.0]).double(), torch.tensor([4.0, 1.0, 0.0]).double()
    mu1, mu2 = torch.zeros(3).double(), torch.tensor([1.0, 0.0, 2.0]).double()
    expected = 5.0 + float((a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scipy_reference(seed):
    g = torch.Generator().manual_seed(seed)
    d = 12
    mu1, mu2 = torch.randn(d, generator=g).double(), torch.randn(d, generator=g).double()
    sigma1, sigma2 = random_covariance(d, g), random_covariance(d, g)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    reference = scipy_frechet(mu1.numpy(), sigma1.numpy(), mu2.numpy(), sigma2.numpy())
    assert ours == pytest.approx(reference, rel=1e-7)


def test_agrees_with_scipy_on_random_features():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, 10, generator=g), torch.randn(400, 10, generator=g) * 1.5 + 0.3
    ours = frechet_distance_from_features(real, fake)
    reference = scipy_frechet(
        real.double().mean(0).numpy(),
        np.cov(real.double().numpy(), rowvar=False),
        fake.double().mean(0).numpy(),
        np.cov(fake.double().numpy(), rowvar=False),
    )
    assert ours == pytest.approx(reference, rel=1e-7)


def test_singular_covariance_stays_finite_and_non_negative():
    # Fewer samples than features: both covariances are rank deficient.
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(10, 32, generator=g), torch.randn(10, 32, generator=g)
    value = frechet_distance_from_features(real, fake)
    assert np.isfinite(value) and value > 0
    # Null eigenvalues carry ~1e-15 round-off whose square roots (~3e-8 each) add up (tr S ~ 32).
    assert abs(frechet_distance_from_features(real, real)) < 1e-5


def test_streaming_sums_match_batch_statistics():
    x = torch.randn(257, 5, generator=torch.Generator().manual_seed(5)).double()
    mean, cov = gaussian_stats(x)
    mean_s, cov_s = stats_from_sums(x.sum(0), x.T @ x, len(x))
    torch.testing.assert_close(mean_s, mean)
    torch.testing.assert_close(cov_s, cov)
    torch.testing.assert_close(cov, torch.cov(x.T))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.zeros(1, 3))
