"""Explanation-quality metrics: ROAD vs a sparse direct solve, closed forms, a D trained on a planted square."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from xai_train.explain import METHODS, attribute
from xai_train.explain.cams import GRADIENT_CAMS, all_cams, cam
from xai_train.explain.quality import (
    cascading_randomisation,
    data_randomisation,
    explanation_infidelity,
    explanation_sensitivity,
    linear_imputation,
    localisation_metrics,
    perturbation_metrics,
    road_removal,
    roar,
    spearman,
)
from xai_train.metrics.classifier import ClassifierRecipe


# --- ROAD imputation ---------------------------------------------------------------------------------------
def scipy_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system for one (H, W) channel, assembled pixel by pixel and solved with a sparse direct solver."""
    h, w = image.shape
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    index = {p: n for n, p in enumerate(unknown)}
    matrix = scipy.sparse.lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros(len(unknown))
    for (i, j), row in index.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= a < h and 0 <= b < w):
                    continue
                weight = 1 / 12 if di and dj else 1 / 6
                matrix[row, row] += weight
                if removed[a, b]:
                    matrix[row, index[(a, b)]] -= weight
                else:
                    rhs[row] += weight * image[a, b]
    solution = scipy.sparse.linalg.spsolve(matrix.tocsr(), rhs)
    out = image.copy()
    for (i, j), row in index.items():
        out[i, j] = solution[row]
    return out


def test_road_imputation_matches_a_sparse_direct_solve():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 12, 12, generator=generator) * 2 - 1
    removed = torch.rand(3, 1, 12, 12, generator=generator) < torch.tensor([0.2, 0.6, 0.9]).reshape(3, 1, 1, 1)
    got = linear_imputation(images, removed)
    for n in range(3):
        for c in range(2):
            expected = scipy_imputation(images[n, c].double().numpy(), removed[n, 0].numpy())
            np.testing.assert_allclose(got[n, c].numpy(), expected, atol=1e-5)
    # Noise: ROAD's std 0.01 on the removed pixels only, none elsewhere.
    noisy = road_removal(seed=1)(images, removed)
    kept = ~removed.expand_as(images)
    assert torch.equal(noisy[kept], images[kept])
    assert 0.008 < (noisy - got)[~kept].std() < 0.012
    # A fully removed image has no known value: it goes to 0 (mid-grey), not NaN.
    assert linear_imputation(images[:1], torch.ones(1, 1, 12, 12, dtype=torch.bool)).abs().max() < 1e-6


# --- perturbation and localisation in closed form -----------------------------------------------------------
class LinearScore(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True)


def test_exact_contributions_beat_the_random_order_and_reversed_ones_lose():
    generator = torch.Generator().manual_seed(2)
    model = LinearScore(torch.randn(1, 1, 8, 8, generator=generator) * 0.3)
    x = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    contributions = (x * model.weight).detach()  # removing a pixel (to 0) removes exactly its contribution
    good = perturbation_metrics(model, x, contributions, removal="constant", steps=16)
    bad = perturbation_metrics(model, x, -contributions, removal="constant", steps=16)
    assert (good["deletion"] < good["deletion_random"] - 0.1).all()
    assert (good["insertion"] > good["insertion_random"] + 0.1).all()
    assert (good["aopc"] > good["aopc_random"]).all()
    assert (bad["deletion"] > bad["deletion_random"]).all()
    torch.testing.assert_close(good["deletion_random"], bad["deletion_random"])  # same seed, same random order
    # Endpoints of the logit curve: deleting everything leaves 0, so AOPC over the logit is known at k = all.
    logit = perturbation_metrics(model, x, contributions, removal="constant", steps=1, score="logit")
    score = model(x).detach().squeeze(1)
    torch.testing.assert_close(logit["deletion"], score / 2)  # trapezoid of (score, 0)
    torch.testing.assert_close(logit["aopc"], score / 2)  # mean of (0, score - 0)


def test_localisation_known_values():
    masks = torch.zeros(3, 1, 8, 8)
    masks[:, :, 2:4, 2:6] = 1
    perfect = localisation_metrics(masks * 5, masks)
    inverted = localisation_metrics(1 - masks, masks)
    assert perfect["pointing_game"].tolist() == [1.0] * 3 and perfect["mask_iou"].tolist() == [1.0] * 3
    assert perfect["energy_in_mask"].tolist() == [1.0] * 3 and perfect["chance"].tolist() == [0.125] * 3
    assert inverted["pointing_game"].tolist() == [0.0] * 3 and inverted["mask_iou"].tolist() == [0.0] * 3
    assert inverted["energy_in_mask"].tolist() == [0.0] * 3
    constant = localisation_metrics(torch.ones(3, 1, 8, 8), masks)
    assert constant["pointing_game"].tolist() == [0.0] * 3  # a flat map points nowhere
    torch.testing.assert_close(constant["energy_in_mask"], constant["chance"])
    with pytest.raises(ValueError, match="at least one pixel"):
        localisation_metrics(masks, torch.zeros(3, 1, 8, 8))


# --- a D trained to find a planted bright square ---------------------------------------------------------------
def planted(n: int, seed: int, size: int = 16, side: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dark noisy images; label 1 has a bright side × side square at a random place; masks mark the square."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, 1, size, size, generator=generator) * 0.3 - 0.5).clamp(-1, 1)
    labels = torch.randint(2, (n,), generator=generator)
    corner = torch.randint(0, size - side + 1, (n, 2), generator=generator)
    rows = torch.arange(size)
    inside_rows = (rows[None] >= corner[:, :1]) & (rows[None] < corner[:, :1] + side)
    inside_cols = (rows[None] >= corner[:, 1:]) & (rows[None] < corner[:, 1:] + side)
    masks = (inside_rows[:, :, None] & inside_cols[:, None, :]).unsqueeze(1).float()
    x = torch.where((masks > 0) & (labels[:, None, None, None] == 1), torch.ones_like(x), x)
    return x, labels, masks


class SquareD(nn.Module):
    """conv -> conv (stride 2, 8×8 map) -> global average pool -> logit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act1 = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.act2 = nn.LeakyReLU(0.2)
        self.head = nn.Linear(16, 1)

    @property
    def feature_layer(self) -> nn.Module:
        return self.act2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.conv2(self.act1(self.conv1(x)))).mean((2, 3)))


def train_square_d(labels_seed: int | None = None) -> SquareD:
    """150 Adam steps (a few seconds); ``labels_seed`` shuffles the labels (data randomisation)."""
    torch.manual_seed(0)
    d = SquareD()
    optimizer = torch.optim.Adam(d.parameters(), 3e-3)
    x, y, _ = planted(512, 0)
    if labels_seed is not None:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(labels_seed))]
    batches = torch.Generator().manual_seed(1)
    for _ in range(150):
        rows = torch.randint(0, len(x), (64,), generator=batches)
        loss = F.binary_cross_entropy_with_logits(d(x[rows]).squeeze(1), y[rows].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return d.eval()


@pytest.fixture(scope="module")
def square_d() -> SquareD:
    return train_square_d()


@pytest.fixture(scope="module")
def squares() -> tuple[torch.Tensor, torch.Tensor]:
    x, y, masks = planted(64, 1)
    return x[y == 1], masks[y == 1]


def test_gradient_cams_point_at_the_square_and_random_cam_does_not(square_d, squares):
    x, masks = squares
    before = copy.deepcopy(square_d.state_dict())
    with torch.no_grad():
        assert (square_d(x) > 0).float().mean() == 1.0  # D learned the task: every square image is "real"
    maps = all_cams(square_d, x)
    for name in GRADIENT_CAMS:
        assert localisation_metrics(maps[name], masks)["pointing_game"].mean() == 1.0, name
    random = localisation_metrics(cam(square_d, x, "randomcam"), masks)
    chance = random["chance"].mean().item()  # 16 / 256
    assert random["pointing_game"].mean() < chance + 0.1 and abs(random["energy_in_mask"].mean() - chance) < 0.03
    deletion = perturbation_metrics(square_d, x, maps["gradcam"], removal="blur", steps=8)
    assert deletion["deletion"].mean() < deletion["deletion_random"].mean() - 0.3
    road = perturbation_metrics(square_d, x[:8], maps["gradcam"][:8], removal="road", steps=8)
    assert road["deletion"].mean() < road["deletion_random"].mean()
    assert all(torch.equal(v, square_d.state_dict()[k]) for k, v in before.items())  # metrics never change D


def edge_detector(_model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """An "explainer" that ignores the model: the image's gradient magnitude."""
    return images.diff(dim=-1, prepend=images[..., :1]).abs() + images.diff(dim=-2, prepend=images[..., :1, :]).abs()


def gradcam_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return cam(model, images, "gradcam")


def test_cascading_randomisation_decorrelates_gradcam_and_fails_the_edge_detector(square_d, squares):
    x, _ = squares
    result = cascading_randomisation(square_d, x, gradcam_of)
    assert result.stages == ("head", "conv2", "conv1")
    assert result.passed and result.correlations.mean(1).max() < 0.5
    edges = cascading_randomisation(square_d, x, edge_detector)
    assert not edges.passed and edges.final == pytest.approx(1.0)
    assert all(torch.equal(v, square_d.state_dict()[k]) for k, v in copy.deepcopy(square_d.state_dict()).items())


def test_data_randomisation_shuffled_labels_change_gradcam_not_the_edge_detector(square_d, squares):
    x, _ = squares
    shuffled = train_square_d(labels_seed=3)
    assert data_randomisation(square_d, shuffled, x, gradcam_of).final < 0.5
    assert data_randomisation(square_d, shuffled, x, edge_detector).final == pytest.approx(1.0)
    assert spearman(x, x).tolist() == pytest.approx([1.0] * len(x))


def method_options(method: str, x: torch.Tensor) -> dict:
    return {
        "deeplift_shap": {"baselines": x, "n_baselines": 2},
        "gradient_shap": {"baselines": x},
        "integrated_gradients": {"n_steps": 4},
        "smoothgrad": {"nt_samples": 2},
        "lime": {"n_samples": 16, "patch": 4},
        "kernel_shap": {"n_samples": 16, "patch": 4},
        "occlusion": {"window": 4},
    }.get(method, {})


@pytest.mark.parametrize("method", list(METHODS))
def test_infidelity_and_sensitivity_accept_every_method(method, square_d, squares):
    x = squares[0][:3]

    def explain(images: torch.Tensor) -> torch.Tensor:
        return attribute(square_d, images, method, **method_options(method, x))

    infidelity = explanation_infidelity(square_d, x, explain, n_perturb_samples=4)
    sensitivity = explanation_sensitivity(x, explain, n_perturb_samples=2)
    assert infidelity.shape == (3,) and torch.isfinite(infidelity).all() and (infidelity >= 0).all()
    assert sensitivity.shape == (3,) and torch.isfinite(sensitivity).all() and (sensitivity >= 0).all()


def test_infidelity_is_scale_free_and_prefers_the_true_gradient():
    generator = torch.Generator().manual_seed(4)
    model = LinearScore(torch.randn(1, 1, 6, 6, generator=generator))
    x = torch.randn(4, 1, 6, 6, generator=generator)

    def exact(images: torch.Tensor) -> torch.Tensor:
        return model.weight.detach().expand_as(images)

    def noise(images: torch.Tensor) -> torch.Tensor:
        return torch.randn(images.shape, generator=torch.Generator().manual_seed(5))

    good = explanation_infidelity(model, x, exact)
    bad = explanation_infidelity(model, x, noise)
    assert (good < 1e-6).all() and (bad > 100 * good.max() + 1e-3).all()
    scaled = explanation_infidelity(model, x, lambda images: 100 * noise(images))
    torch.testing.assert_close(scaled, bad, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_roar_gradcam_removal_hurts_more_than_random_removal():
    x, y, _ = planted(600, 5)
    recipe = ClassifierRecipe(width=4, num_features=8, epochs=4, max_steps=60, batch_size=64, max_shift=0, lr=1e-2)
    result = roar(x, y, lambda m, images: cam(m, images, "gradcam", target=1), fractions=(0.2,), recipe=recipe)
    assert result.base_accuracy > 0.9
    # The top 20% of the pixels (51 of 256) cover the 16-pixel square: without it the labels are unlearnable
    # (measured 0.52); 20% random pixels leave most of every square (measured 0.99).
    assert result.accuracy[0] < 0.7 and result.random_accuracy[0] > 0.9


def test_metrics_leave_a_train_mode_batchnorm_d_exactly_as_it_was(conv_d, images):
    assert conv_d.training
    before = copy.deepcopy(conv_d.state_dict())
    maps = cam(conv_d, images, "layercam")
    perturbation_metrics(conv_d, images, maps, steps=4)
    explanation_infidelity(conv_d, images, lambda x: cam(conv_d, x, "layercam").expand(-1, 2, -1, -1))
    explanation_sensitivity(images, lambda x: cam(conv_d, x, "layercam"), n_perturb_samples=2)
    cascading_randomisation(conv_d, images, gradcam_of)
    assert conv_d.training and all(m.training for m in conv_d.modules())
    assert all(p.requires_grad for p in conv_d.parameters())
    for key, value in before.items():
        assert torch.equal(value, conv_d.state_dict()[key]), key  # BatchNorm running statistics included
