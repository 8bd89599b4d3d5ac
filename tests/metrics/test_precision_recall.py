import pytest
import torch

from xai_train.metrics import knn_radii, precision_recall


def naive_precision_recall(real, fake, k):
    def radii(points):
        out = []
        for i, p in enumerate(points):
            dist = sorted(float((p - q).norm()) for j, q in enumerate(points) if j != i)
            out.append(dist[k - 1])
        return out

    def coverage(queries, support, r):
        inside = [any(float((q - s).norm()) <= rs for s, rs in zip(support, r, strict=True)) for q in queries]
        return sum(inside) / len(inside)

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def test_knn_radii_exclude_self():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_matches_naive_computation():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 3, generator=g), torch.randn(30, 3, generator=g) * 1.5 + 0.5
    ours = precision_recall(real, fake, k=3)
    assert ours == pytest.approx(naive_precision_recall(real.double(), fake.double(), 3))


def test_identical_and_disjoint_sets():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100) == (0.0, 0.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    real = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    collapsed = real[real[:, 0] > 1.0]  # one corner of the real distribution
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.4
