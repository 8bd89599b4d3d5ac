import pytest
import torch

from xai_train.metrics import kernel_inception_distance, mmd2_unbiased, polynomial_kernel


def naive_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as plain loops."""
    x, y = x.double().tolist(), y.double().tolist()
    d = len(x[0])

    def k(a, b):
        return (sum(p * q for p, q in zip(a, b, strict=True)) / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kernel_matches_definition():
    x, y = torch.randn(3, 4), torch.randn(2, 4)
    expected = (x.double() @ y.double().T / 4 + 1) ** 3
    torch.testing.assert_close(polynomial_kernel(x, y), expected)


@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0])
def test_mmd2_matches_naive_loops(shift):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(15, 5, generator=g), torch.randn(12, 5, generator=g) + shift
    assert float(mmd2_unbiased(x, y)) == pytest.approx(naive_mmd2(x, y), rel=1e-9, abs=1e-12)


def test_kid_one_full_subset_equals_direct_computation():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 6, generator=g), torch.randn(20, 6, generator=g) * 2
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=20)
    assert mean == pytest.approx(naive_mmd2(x, y), rel=1e-9)
    assert std == 0.0


def test_kid_is_near_zero_for_same_distribution_and_grows_with_shift():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same, same_std = kernel_inception_distance(x, y, subsets=20, subset_size=200)
    small, _ = kernel_inception_distance(x, y + 0.5, subsets=20, subset_size=200)
    large, _ = kernel_inception_distance(x, y + 2.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert same < small < large


def test_kid_subsets_are_seeded():
    x, y = torch.randn(100, 4), torch.randn(100, 4)
    a = kernel_inception_distance(x, y, subsets=5, subset_size=30, seed=7)
    b = kernel_inception_distance(x, y, subsets=5, subset_size=30, seed=7)
    assert a == b


def test_whole_kernel_path_equals_per_subset_path():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(150, 6, generator=g), torch.randn(120, 6, generator=g) * 1.3
    fast = kernel_inception_distance(x, y, subsets=7, subset_size=50)
    slow = kernel_inception_distance(x, y, subsets=7, subset_size=50, full_kernel_limit=0)
    assert fast == pytest.approx(slow, rel=1e-9)
