import pytest
import torch

from xai_train.diffusion.curriculum import TimestepCurriculum


def test_uniform_until_every_bucket_has_a_score():
    curriculum = TimestepCurriculum(100, num_buckets=4)
    curriculum.update(torch.tensor([0, 30]), torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(curriculum.probabilities(), torch.full((100,), 0.01, dtype=torch.float64))


def test_probabilities_follow_scores_with_a_uniform_floor():
    curriculum = TimestepCurriculum(100, num_buckets=4, uniform_mix=0.2, decay=0.0)
    curriculum.update(torch.tensor([0, 30, 60, 90]), torch.tensor([1.0, 1.0, 1.0, 5.0]))
    p = curriculum.probabilities()
    assert float(p.sum()) == pytest.approx(1.0)
    assert float(p[99] / p[0]) == pytest.approx((0.2 / 100 + 0.8 * 5 / 8 / 25) / (0.2 / 100 + 0.8 / 8 / 25))
    assert float(p.min()) >= 0.2 / 100


def test_importance_sampling_correction_is_unbiased():
    """E_p[w(t)·f(t)] equals the uniform mean of f for any f."""
    curriculum = TimestepCurriculum(100, num_buckets=10, uniform_mix=0.3, decay=0.0)
    curriculum.update(torch.arange(0, 100, 10), torch.linspace(0.1, 3.0, 10))
    f = torch.linspace(0, 1, 100) ** 2
    t, w = curriculum.sample(200_000, torch.Generator().manual_seed(0))
    assert float((w * f[t]).mean()) == pytest.approx(float(f.mean()), rel=0.01)
    assert float(w.mean()) == pytest.approx(1.0, rel=0.01)
    assert float(t.float().mean()) > 55  # it does favour the high-score end


def test_state_dict_round_trip_and_errors():
    curriculum = TimestepCurriculum(100, num_buckets=4)
    curriculum.update(torch.tensor([0, 30, 60, 90]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    other = TimestepCurriculum(100, num_buckets=4)
    other.load_state_dict(curriculum.state_dict())
    torch.testing.assert_close(other.probabilities(), curriculum.probabilities())
    with pytest.raises(ValueError, match="divide"):
        TimestepCurriculum(100, num_buckets=7)
    with pytest.raises(ValueError, match="uniform_mix"):
        TimestepCurriculum(100, uniform_mix=0.0)
