import pytest
import torch

from xai_train.metrics import (
    FeatureMetrics,
    frechet_distance_from_features,
    kernel_inception_distance,
    precision_recall,
)


def features(seed: int, n: int = 300, d: int = 6, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def options():
    return dict(metrics=("fd", "kid", "pr"), kid_subsets=8, kid_subset_size=100)


def test_chunks_equal_one_shot_and_direct_functions():
    real, fake = features(0), features(1, n=250, shift=0.4)
    one_shot = FeatureMetrics(6, **options())
    one_shot.update(real=real, fake=fake)
    chunked = FeatureMetrics(6, **options())
    for r in real.split(37):
        chunked.update(real=r)
    for f in fake.split(64):
        chunked.update(fake=f)
    a, b = one_shot.compute(), chunked.compute()
    assert a.keys() == b.keys() == {"fd", "kid", "kid_std", "precision", "recall", "num_real", "num_fake"}
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert a["fd"] == pytest.approx(frechet_distance_from_features(real, fake), rel=1e-9)
    assert (a["kid"], a["kid_std"]) == pytest.approx(kernel_inception_distance(real, fake, subsets=8, subset_size=100))
    assert (a["precision"], a["recall"]) == precision_recall(real, fake)
    assert (a["num_real"], a["num_fake"]) == (300, 250)


def test_reset_keeps_the_reference_side():
    metrics = FeatureMetrics(6, metrics=("fd",))
    metrics.update(real=features(0), fake=features(1))
    first = metrics.compute()["fd"]
    metrics.reset(real=False)
    metrics.update(fake=features(1))
    assert metrics.compute()["fd"] == pytest.approx(first, rel=1e-12)
    metrics.reset(real=False)
    metrics.update(fake=features(1, shift=1.0))
    assert metrics.compute()["fd"] > first + 3  # ||shift||^2 = 6
    metrics.reset()
    with pytest.raises(ValueError, match="need >= 2 features"):
        metrics.compute()


def test_fd_only_keeps_no_features():
    metrics = FeatureMetrics(6, metrics=("fd",))
    metrics.update(real=features(0), fake=features(1))
    assert metrics.real.features == [] and metrics.fake.features == []


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown metrics \\['fid'\\]"):
        FeatureMetrics(6, metrics=("fid",))
    with pytest.raises(ValueError, match="fake features must be \\(B, 6\\)"):
        FeatureMetrics(6).update(fake=torch.zeros(3, 5))
