"""Automatic artifact-unit correction (Tousi et al., CVPR 2021; DESIGN.md §10), always with controls.

1. Flag samples by a scorer's flaw score; rank a layer's units by the scorer's defect score.
2. Suppress the top-k units, ``r ← (1 − s)·r`` (s = 1 ablates): globally in one layer, or sequentially
   layer by layer, re-scoring the corrected generator before each next layer.
3. Measure it against a **random-unit control** (same k, several seeds) over a **k-sweep**: FD/KID of
   all samples and of the flagged ones before/after, and how far the unflagged samples moved.

An earlier measurement (DESIGN.md §10) found that with D as the scorer the top units were no better than
random and that more units quickly over-suppress: the controls are not optional.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xai_train.errors import UserError
from xai_train.generator.units import generate
from xai_train.metrics import frechet_distance_from_features, kernel_inception_distance


class Scorer(Protocol):
    """What :func:`rank_units` needs (see ``xai_train.generator.scorers``)."""

    name: str

    def sample_scores(self, images: Tensor, units: Tensor) -> Tensor: ...

    def unit_scores(self, images: Tensor, units: Tensor, flagged: Tensor) -> Tensor: ...


@dataclasses.dataclass
class UnitRanking:
    """Units of one layer ranked by defect score.

    Attributes:
        layer: the layer.
        scores: (K,) defect scores (higher = more artifact-like).
        sample_scores: (N,) flaw scores of the samples.
        flagged: (N,) bool: the samples taken as flawed.
    """

    layer: str
    scores: Tensor
    sample_scores: Tensor
    flagged: Tensor

    @property
    def order(self) -> list[int]:
        """Units, most artifact-like first (ties: lower index first)."""
        return sorted(range(len(self.scores)), key=lambda k: (-self.scores[k].item(), k))

    def scale(self, k: int, strength: float = 1.0) -> Tensor:
        """(K,) scales suppressing the top ``k`` units by ``strength``; ``k`` must lie in 1..K."""
        check_k(k, len(self.scores), self.layer)
        return suppression_scale(len(self.scores), self.order[:k], strength)


def check_k(k: int, num_units: int, layer: str = "the layer") -> int:
    """``k`` if it is a unit count in 1..K, else a :class:`UserError` naming the layer and its K.

    A ``k`` above K would suppress the whole layer (and make the random control the same whole layer);
    a negative one would slice from the end (``order[:-1]`` is K − 1 units).

    Example:
        >>> check_k(3, 16, "project.act")
        3
        >>> check_k(100, 16, "project.act")
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: k must be a unit count in 1..16 for layer 'project.act' (16 units), got 100
    """
    try:
        count = operator.index(k)  # ints and numpy/torch integers; never a float or a bool
    except TypeError:
        count = None
    if count is None or isinstance(k, bool) or not 1 <= count <= num_units:
        raise UserError(f"k must be a unit count in 1..{num_units} for layer '{layer}' ({num_units} units), got {k!r}")
    return count


def check_units(units: Sequence[int], num_units: int) -> list[int]:
    """``units`` as a list if every index lies in 0..K−1, no index twice, else a :class:`UserError`.

    Example:
        >>> check_units([3, 0], 4)
        [3, 0]
        >>> check_units([-1], 4)
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: unit indices must lie in 0..3 (a layer of 4 units), got -1 in [-1]
    """
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < num_units]
    if bad:
        raise UserError(
            f"unit indices must lie in 0..{num_units - 1} (a layer of {num_units} units), got {bad[0]} in {units}"
        )
    if len(set(units)) != len(units):
        raise UserError(f"unit indices must be distinct, got {units}")
    return units


def suppression_scale(num_units: int, units: Sequence[int], strength: float = 1.0) -> Tensor:
    """(K,) ones, with ``1 − strength`` at ``units`` (indices in 0..K−1).

    Example:
        >>> suppression_scale(4, [2], 0.75).tolist()
        [1.0, 1.0, 0.25, 1.0]
    """
    if not 0 <= strength <= 1:
        raise UserError(f"suppression strength must lie in [0, 1], got {strength}")
    units = check_units(units, num_units)
    scale = torch.ones(num_units)
    scale[torch.as_tensor(list(units), dtype=torch.long)] = 1 - strength
    return scale


def random_units(num_units: int, k: int, seed: int, exclude: Sequence[int] = ()) -> list[int]:
    """``k`` distinct random units (seeded), avoiding ``exclude`` while enough others remain.

    Example:
        >>> random_units(10, 3, seed=0) == random_units(10, 3, seed=0)
        True
    """
    check_k(k, num_units)
    pool = [u for u in range(num_units) if u not in set(exclude)]
    if len(pool) < k:
        pool = list(range(num_units))
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:k]
    return [pool[i] for i in pick.tolist()]


def flag_top(scores: Tensor, fraction: float) -> Tensor:
    """(N,) bool: the ``fraction`` of samples with the highest scores (at least one).

    Example:
        >>> flag_top(torch.tensor([0.1, 0.9, 0.5, 0.2]), 0.5).tolist()
        [False, True, True, False]
    """
    if not 0 < fraction <= 1:
        raise UserError(f"flag fraction must lie in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(scores)))
    flagged = torch.zeros(len(scores), dtype=torch.bool)
    flagged[scores.argsort(descending=True, stable=True)[:count]] = True
    return flagged


def rank_units(
    generator: nn.Module,
    layer: str,
    latents: Tensor,
    scorer: Scorer,
    *,
    flag_fraction: float = 0.2,
    flagged: Tensor | None = None,
    corrections: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
) -> UnitRanking:
    """Flags samples and scores the layer's units with ``scorer`` (under earlier ``corrections``).

    Args:
        generator: the generator.
        layer: the layer whose units are ranked.
        latents: (N, latent_dim).
        scorer: a :class:`Scorer`.
        flag_fraction: share of samples flagged as flawed (the highest flaw scores).
        flagged: (N,) bool to use instead (e.g. oracle labels).
        corrections: ``{layer: (K,) scale}`` already applied.
        batch_size: latents per forward pass.

    Returns:
        The :class:`UnitRanking`.

    Example:
        >>> from xai_train.generator.scorers import RareUnitScorer
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> ranking = rank_units(G, "project.act", torch.randn(20, 100), RareUnitScorer(), flag_fraction=0.25)
        >>> int(ranking.flagged.sum()), len(ranking.order)
        (5, 32)
    """
    images, units = generate(generator, latents, layer, batch_size=batch_size, edits=corrections)
    sample_scores = scorer.sample_scores(images, units).cpu()
    if flagged is None:
        flagged = flag_top(sample_scores, flag_fraction)
    return UnitRanking(layer, scorer.unit_scores(images, units, flagged).cpu(), sample_scores, flagged)


def sequential_correction(
    generator: nn.Module,
    layers: Sequence[str],
    latents: Tensor,
    scorer: Scorer,
    *,
    k: int,
    strength: float = 1.0,
    flag_fraction: float = 0.2,
    batch_size: int = 256,
) -> tuple[dict[str, Tensor], list[UnitRanking]]:
    """Layer by layer: rank the units of the corrected generator, suppress the top ``k``, go on.

    One layer is the global correction. Samples are re-scored (re-flagged) at every layer.

    Returns:
        ``(corrections {layer: (K,) scale}, the ranking found at each layer)``.

    Example:
        >>> from xai_train.generator.scorers import RareUnitScorer
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> corrections, _ = sequential_correction(G, ["project.act", "upsample.0.act"], torch.randn(20, 100),
        ...                                        RareUnitScorer(), k=2)
        >>> {layer: int((scale == 0).sum()) for layer, scale in corrections.items()}
        {'project.act': 2, 'upsample.0.act': 2}
    """
    corrections: dict[str, Tensor] = {}
    rankings = []
    for layer in layers:
        ranking = rank_units(
            generator, layer, latents, scorer, flag_fraction=flag_fraction, corrections=corrections,
            batch_size=batch_size,
        )  # fmt: skip
        corrections[layer] = ranking.scale(k, strength)
        rankings.append(ranking)
    return corrections, rankings


def sample_metrics(real_features: Tensor, fake_features: Tensor, *, kid_subsets: int = 50) -> dict[str, float]:
    """FD and KID of generated features against real ones (KID subsets clipped to the smaller set).

    Example:
        >>> x = torch.randn(100, 4)
        >>> abs(sample_metrics(x, x, kid_subsets=2)["fd"]) < 1e-6
        True
    """
    kid, kid_std = kernel_inception_distance(
        real_features, fake_features, subsets=kid_subsets, subset_size=min(1000, len(fake_features))
    )
    return {"fd": frechet_distance_from_features(real_features, fake_features), "kid": kid, "kid_std": kid_std}


def correction_metrics(
    before: Tensor,
    after: Tensor,
    flagged: Tensor,
    real_features: Tensor,
    features: Callable[[Tensor], Tensor],
) -> dict[str, float]:
    """What a correction did to the same latents' images.

    Args:
        before: (N, C, H, W) uncorrected images.
        after: (N, C, H, W) corrected images of the same latents.
        flagged: (N,) bool flawed samples.
        real_features: (M, D) features of real images.
        features: images -> (N, D) features (the same extractor).

    Returns:
        ``fd_all``/``kid_all`` and ``fd_flagged``/``kid_flagged`` after the correction, and
        ``unflagged_change`` (mean |after − before| over unflagged pixels, images in [-1, 1]) and
        ``flagged_change``. FD/KID of a subset with fewer than two samples are NaN.

    Example:
        >>> before = torch.zeros(4, 1, 2, 2)
        >>> after = before.clone(); after[0] = 1
        >>> flat = lambda x: x.flatten(1) + torch.arange(4.0)  # toy features
        >>> flagged = torch.tensor([True, False, False, False])
        >>> out = correction_metrics(before, after, flagged, torch.randn(8, 4), flat)
        >>> out["flagged_change"], out["unflagged_change"]
        (1.0, 0.0)
        >>> out["fd_flagged"]  # one flagged sample: no covariance
        nan
    """
    out = {}
    for subset, rows in (("all", slice(None)), ("flagged", flagged)):
        if len(after[rows]) < 2:  # a covariance needs two samples
            out.update({f"{name}_{subset}": float("nan") for name in ("fd", "kid", "kid_std")})
            continue
        metrics = sample_metrics(real_features, features(after[rows]))
        out.update({f"{name}_{subset}": value for name, value in metrics.items()})
    change = (after - before).abs().mean(dim=(1, 2, 3))
    out["unflagged_change"] = change[~flagged].mean().item() if (~flagged).any() else 0.0
    out["flagged_change"] = change[flagged].mean().item() if flagged.any() else 0.0
    return out


def k_sweep(
    generator: nn.Module,
    ranking: UnitRanking,
    latents: Tensor,
    real_features: Tensor,
    features: Callable[[Tensor], Tensor],
    *,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
    strength: float = 1.0,
    random_seeds: Sequence[int] = (0, 1, 2),
    corrections: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> list[dict[str, object]]:
    """FD/KID and sample change for the top-k units vs random k units, for every k.

    Args:
        generator: the generator.
        ranking: the ranking of one layer (its ``flagged`` samples are the flagged subset).
        latents: the latents the ranking was made on.
        real_features: (M, D) real features.
        features: images -> features.
        ks: unit counts, each in 1..K (else a :class:`UserError`, before any sample is generated).
        strength: suppression strength.
        random_seeds: one random control per seed.
        corrections: corrections of *other* layers applied in every arm (sequential correction).
        batch_size: latents per forward pass.
        progress: show a progress bar.

    Returns:
        Rows ``{"k", "arm" ("none" | "top" | "random"), "seed", "units", metrics...}``; one ``"none"`` row (k=0).

    Example:
        >>> from xai_train.generator.scorers import RareUnitScorer
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> z = torch.randn(40, 100)
        >>> ranking = rank_units(G, "project.act", z, RareUnitScorer())
        >>> features = lambda x: x.mean(dim=(2, 3))  # toy 1-d features
        >>> rows = k_sweep(G, ranking, z, torch.randn(50, 1), features, ks=(1, 2), random_seeds=(0,))
        >>> [(row["k"], row["arm"]) for row in rows]
        [(0, 'none'), (1, 'top'), (2, 'top'), (1, 'random'), (2, 'random')]
    """
    num_units = len(ranking.scores)
    for k in ks:  # before any generation: one bad k is an error, not a whole-layer arm
        check_k(k, num_units, ranking.layer)
    fixed = {name: scale for name, scale in (corrections or {}).items() if name != ranking.layer}
    before, _ = generate(generator, latents, batch_size=batch_size, edits=fixed)
    flagged = ranking.flagged
    baseline = correction_metrics(before, before, flagged, real_features, features)
    rows: list[dict[str, object]] = [{"k": 0, "arm": "none", "seed": -1, "units": [], **baseline}]
    arms = [(k, "top", -1, ranking.order[:k]) for k in ks]
    arms += [(k, "random", seed, random_units(num_units, k, seed)) for k in ks for seed in random_seeds]
    for k, arm, seed, units in tqdm(arms, desc=f"k-sweep {ranking.layer}", disable=not progress):
        edits = {**fixed, ranking.layer: suppression_scale(num_units, units, strength)}
        after, _ = generate(generator, latents, batch_size=batch_size, edits=edits)
        metrics = correction_metrics(before, after, flagged, real_features, features)
        rows.append({"k": k, "arm": arm, "seed": seed, "units": list(units), **metrics})
    return rows


def summarise_sweep(rows: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """Per (k, arm): the mean and std over seeds of every metric (the random arm has several seeds).

    Example:
        >>> rows = [{"k": 1, "arm": "random", "seed": s, "units": [s], "fd_all": float(s)} for s in range(3)]
        >>> summarise_sweep(rows)[0]["fd_all"], summarise_sweep(rows)[0]["fd_all_std"]
        (1.0, 0.816496580927726)
    """
    groups: dict[tuple[int, str], list[Mapping[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["k"], row["arm"]), []).append(row)
    summary = []
    for (k, arm), members in groups.items():
        entry: dict[str, object] = {"k": k, "arm": arm, "seeds": len(members)}
        for name in members[0]:
            if name in ("k", "arm", "seed", "units"):
                continue
            values = torch.tensor([float(m[name]) for m in members], dtype=torch.float64)
            entry[name] = values.mean().item()
            entry[f"{name}_std"] = values.std(unbiased=False).item()
        summary.append(entry)
    return summary
