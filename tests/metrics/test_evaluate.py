import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance  # the dev extra installs it: this test always runs

from xai_train.metrics import (
    ClassifierFeatures,
    FeatureClassifier,
    GenerativeMetrics,
    evaluate_images,
    tagged_scalars,
)


@pytest.fixture
def extractor():
    torch.manual_seed(0)
    return ClassifierFeatures(FeatureClassifier(1, 10, width=4, num_features=8), "toy-cnn", (1, 8, 8), {})


def images(seed: int, n: int = 120) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_streaming_images_equal_one_shot_and_name_the_extractor(extractor):
    real, fake = images(0), images(1) * 0.5
    one_shot = evaluate_images(real, fake, extractor, metrics=("fd", "kid", "pr"), kid_subsets=4)
    streaming = GenerativeMetrics(extractor, metrics=("fd", "kid", "pr"), batch_size=16, kid_subsets=4)
    for r, f in zip(real.split(50), fake.split(50), strict=True):
        streaming.update(real=r, fake=f)
    result = streaming.compute()
    assert result["extractor"] == one_shot["extractor"] == "toy-cnn"
    for key in ("fd", "kid", "kid_std", "precision", "recall"):
        assert result[key] == pytest.approx(one_shot[key], rel=1e-6, abs=1e-9)


def test_uint8_images_are_mapped_to_the_model_range(extractor):
    pixels = torch.randint(0, 256, (60, 1, 8, 8), dtype=torch.uint8)
    as_float = pixels.float() / 127.5 - 1
    a = evaluate_images(pixels, images(2, 60), extractor, metrics=("fd",))
    b = evaluate_images(as_float, images(2, 60), extractor, metrics=("fd",))
    assert a["fd"] == pytest.approx(b["fd"], rel=1e-6)


def test_tagged_scalars_carry_the_extractor():
    result = {
        "extractor": "digits-32-cnn-abc123",
        "fd": 3.0,
        "kid": 0.1,
        "kid_std": 0.01,
        "num_real": 5,
        "num_fake": 5,
    }
    assert tagged_scalars(result) == {
        "eval/fd_digits-32-cnn-abc123": 3.0,
        "eval/kid_digits-32-cnn-abc123": 0.1,
        "eval/kid_std_digits-32-cnn-abc123": 0.01,
    }


def test_fd_agrees_with_torchmetrics_using_our_extractor(extractor):
    real, fake = images(3, 200), images(4, 200) * 0.7
    reference = FrechetInceptionDistance(feature=extractor, normalize=True)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    ours = evaluate_images(real, fake, extractor, metrics=("fd",))["fd"]
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)


def test_metrics_are_the_same_bits_at_one_and_two_threads():
    from xai_train.metrics import domain_feature_extractor

    extractor = domain_feature_extractor("digits")
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 32, 32, generator=generator) * 2 - 1
    fake = torch.rand(200, 1, 32, 32, generator=generator)
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(evaluate_images(real, fake * 2 - 1, extractor, kid_subsets=5, kid_subset_size=100))
            assert torch.get_num_threads() == threads  # restored after the single-threaded block
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]  # exact, every field
