"""Artifact scorers for generated images: a trained flawed/normal classifier, ``−D(x)``, and rare units.

A scorer answers two questions (DESIGN.md §10): which samples look flawed (``sample_scores``), and which
units of a layer draw the flaws (``unit_scores``). The mask scorers (classifier, ``−D``) answer the second
with Tousi et al.'s recipe: pseudo artifact masks = the scorer's thresholded CAM (any
``xai_train.explain.METHODS`` name, default Grad-CAM), and a unit's defect score = the IoU of its
thresholded, upsampled map with those masks over the flagged samples. The label-free scorer (Choi et al.,
IJCAI 2022) needs no masks: units active on few samples are "rare"; samples are ranked by how many
rare units fire, units by how rarely they fire.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import reduce
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xai_train.errors import UserError
from xai_train.explain import attribute, check_method, to_mask
from xai_train.generator.iou import iou_from_counts, overlap_counts, unit_quantiles

SCORERS: tuple[str, ...] = ("classifier", "d", "rare")
"""Scorer names the correction recipe accepts."""


class ArtifactClassifier(nn.Module):
    """A small CNN: images (B, C, H, W) in [-1, 1] -> logit (B, 1) that the image is flawed.

    Args:
        channels: image channels C.
        width: channels of the first stage (doubled twice).

    Example:
        >>> net = ArtifactClassifier(1, width=4)
        >>> net(torch.zeros(2, 1, 32, 32)).shape, type(net.feature_layer).__name__
        (torch.Size([2, 1]), 'ReLU')
    """

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.channels, self.width = channels, width
        widths = [channels, width, 2 * width, 4 * width]
        self.features = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU())
                for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
            ]
        )
        self.head = nn.Linear(widths[-1], 1)

    @property
    def feature_layer(self) -> nn.Module:
        """The last stage's ReLU (what Grad-CAM hooks): a map of 1/4 the image side."""
        return self.features[-1][-1]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(reduce(self.features(images), "b c h w -> b c", "mean"))


def train_artifact_classifier(
    images: Tensor, flawed: Tensor, *, width: int = 16, steps: int = 300, lr: float = 2e-3, seed: int = 0
) -> tuple[ArtifactClassifier, float]:
    """Trains :class:`ArtifactClassifier` with class-balanced BCE on labelled generations.

    Args:
        images: (N, C, H, W) generations in [-1, 1].
        flawed: (N,) bool labels (True = flawed).
        width: classifier width.
        steps: Adam steps on batches of 64.
        lr: learning rate.
        seed: initialisation and batch order.

    Returns:
        ``(classifier in eval mode, accuracy on the last 20% of the samples, held out)``.

    Example:
        >>> x = torch.rand(40, 1, 16, 16) * 2 - 1
        >>> net, accuracy = train_artifact_classifier(x, x.mean(dim=(1, 2, 3)) > 0, width=4, steps=2)
        >>> 0 <= accuracy <= 1
        True
    """
    flawed = flawed.bool()
    if flawed.all() or not flawed.any():
        raise UserError("the artifact classifier needs both flawed and normal examples")
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images, flawed = images[order], flawed[order]
    held = max(1, len(images) // 5)
    train_x, train_y = images[:-held], flawed[:-held].float()
    model = ArtifactClassifier(images.shape[1], width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    positive = train_y.mean().clamp(0.01, 0.99)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(len(train_x), (64,), generator=generator)
        target = train_y[pick]
        weight = torch.where(target > 0, 0.5 / positive, 0.5 / (1 - positive))  # balance rare flaws
        loss = F.binary_cross_entropy_with_logits(model(train_x[pick])[:, 0], target, weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(images[-held:])[:, 0] > 0) == flawed[-held:]).float().mean().item()
    return model, accuracy


def save_artifact_classifier(model: ArtifactClassifier, path: str | Path, **info: object) -> Path:
    """Writes ``<path>.safetensors`` and ``<path>.json`` (architecture and ``info``); returns the weights path.

    Example:
        >>> import os, tempfile
        >>> path = save_artifact_classifier(ArtifactClassifier(1, width=4), os.path.join(tempfile.mkdtemp(), "s"))
        >>> path.name, load_artifact_classifier(path).width
        ('s.safetensors', 4)
    """
    weights, meta = Path(path).with_suffix(".safetensors"), Path(path).with_suffix(".json")
    weights.parent.mkdir(parents=True, exist_ok=True)
    for target, write in (
        (weights, lambda p: save_file(model.state_dict(), str(p))),
        (meta, lambda p: p.write_text(json.dumps({"channels": model.channels, "width": model.width, **info}))),
    ):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, target)
    return weights


def load_artifact_classifier(path: str | Path) -> ArtifactClassifier:
    """Loads what :func:`save_artifact_classifier` wrote (``path`` with or without a suffix).

    Raises:
        UserError: the files are missing or do not hold an artifact classifier.

    Example:
        >>> try:
        ...     load_artifact_classifier("/nonexistent/scorer")
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        scorer checkpoint /nonexistent/scorer.safetensors not found
    """
    weights, meta = Path(path).with_suffix(".safetensors"), Path(path).with_suffix(".json")
    for needed in (weights, meta):
        if not needed.is_file():
            raise UserError(
                f"scorer checkpoint {needed} not found; train one with recipes/correct_units.py --train-scorer"
            )
    try:
        info = json.loads(meta.read_text())
        model = ArtifactClassifier(int(info["channels"]), int(info["width"]))
        model.load_state_dict(load_file(weights))
    except (KeyError, TypeError, json.JSONDecodeError, SafetensorError, RuntimeError) as err:
        raise UserError(f"scorer checkpoint {weights} does not load as an ArtifactClassifier: {err}") from err
    return model.eval()


class NegatedDiscriminator(nn.Module):
    """``−D(x)``: D's "fake" evidence as a flaw score (weak: D's fake-evidence maps are not artifact detectors).

    Example:
        >>> from xai_train.models import DCGANDiscriminator
        >>> D = DCGANDiscriminator(32, 1, width=4).eval()
        >>> x = torch.zeros(2, 1, 32, 32)
        >>> torch.equal(NegatedDiscriminator(D)(x), -D(x))
        True
    """

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    @property
    def feature_layer(self) -> nn.Module:
        return self.discriminator.feature_layer

    def forward(self, images: Tensor) -> Tensor:
        return -self.discriminator(images)


def _masked_unit_iou(units: Tensor, masks: Tensor, thresholds: Tensor) -> Tensor:
    return iou_from_counts(overlap_counts(units, masks, thresholds))[:, 0]


class MaskScorer:
    """Flags samples by a score and ranks units by IoU with pseudo artifact masks over the flagged samples.

    Args:
        score: images (B, C, H, W) -> (B,) flaw scores (higher = more flawed).
        masks: images -> (B, 1, H, W) bool pseudo artifact masks.
        level: unit threshold = this quantile of the unit's activations over all samples.
        name: shown in reports.

    Example:
        >>> scorer = MaskScorer(lambda x: x.mean(dim=(1, 2, 3)), lambda x: x > 0)
        >>> units = torch.rand(8, 3, 4, 4)
        >>> scorer.unit_scores(torch.rand(8, 1, 8, 8), units, torch.ones(8, dtype=torch.bool)).shape
        torch.Size([3])
    """

    def __init__(self, score: Callable[[Tensor], Tensor], masks: Callable[[Tensor], Tensor], *, level: float = 0.99,
                 name: str = "masks"):  # fmt: skip
        self.score, self.masks, self.level, self.name = score, masks, level, name

    def sample_scores(self, images: Tensor, units: Tensor) -> Tensor:
        """(N,) flaw scores."""
        with torch.no_grad():
            return torch.cat([self.score(chunk).flatten() for chunk in images.split(256)])

    def unit_scores(self, images: Tensor, units: Tensor, flagged: Tensor) -> Tensor:
        """(K,) defect scores: dataset IoU of each unit with the pseudo masks over the flagged samples."""
        thresholds = unit_quantiles(units, self.level)
        masks = torch.cat([self.masks(chunk).bool() for chunk in images[flagged].split(128)])
        return _masked_unit_iou(units[flagged], masks, thresholds)


def cam_scorer(
    model: nn.Module, *, method: str = "gradcam", cam_threshold: float = 0.3, level: float = 0.99, **options: object
) -> MaskScorer:
    """A :class:`MaskScorer` whose score is ``model``'s logit and whose masks are its thresholded CAM.

    Args:
        model: images -> (B, 1) flaw logits (an :class:`ArtifactClassifier`, ``NegatedDiscriminator(D)``, ...).
        method: any ``xai_train.explain.METHODS`` name.
        cam_threshold: a pixel is in the pseudo mask when its min-max normalised map exceeds this.
        level: unit threshold quantile.
        **options: passed to the explainer.

    Returns:
        The scorer.

    Example:
        >>> scorer = cam_scorer(ArtifactClassifier(1, width=4).eval())
        >>> scorer.masks(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """
    check_method(method, options)

    def masks(images: Tensor) -> Tensor:
        cam = attribute(model, images, method, **options)
        return to_mask(cam, absolute=False, reduce="max").mask > cam_threshold  # evidence for "flawed"

    def score(images: Tensor) -> Tensor:
        return model(images)[:, 0]

    return MaskScorer(score, masks, level=level, name=f"{type(model).__name__}+{method}")


def unit_firing(units: Tensor, level: float = 0.99, relative: float = 0.5) -> Tensor:
    """(N, K) bool: the unit's spatial max exceeds ``relative`` × its ``level`` quantile of spatial maxima.

    Dead units (quantile <= 0) never fire. (Choi et al.'s exact firing rule is unverified; this is ours.)

    Example:
        >>> units = torch.zeros(10, 2, 2, 2); units[:3, 0] = 1; units[:, 1] = 1
        >>> unit_firing(units).float().mean(dim=0).tolist()
        [0.30000001192092896, 1.0]
    """
    peaks = reduce(units, "n k h w -> n k", "max")
    reference = torch.quantile(peaks, level, dim=0)
    return (peaks > relative * reference) & (reference > 0)


class RareUnitScorer:
    """Label-free (Choi et al.): units firing on at most ``max_frequency`` of the samples are rare.

    ``sample_scores`` = how many rare units fire; ``unit_scores`` = ``1 − frequency`` for rare units, 0 else
    (the rarest first).

    Example:
        >>> units = torch.zeros(10, 2, 2, 2); units[:2, 0] = 1; units[:, 1] = 1
        >>> scorer = RareUnitScorer()
        >>> scorer.sample_scores(None, units)[:3].tolist(), scorer.unit_scores(None, units, None).tolist()
        ([1.0, 1.0, 0.0], [0.800000011920929, 0.0])
    """

    name = "rare"

    def __init__(self, max_frequency: float = 0.3, level: float = 0.99, relative: float = 0.5):
        self.max_frequency, self.level, self.relative = max_frequency, level, relative

    def _rare(self, units: Tensor) -> tuple[Tensor, Tensor]:
        firing = unit_firing(units, self.level, self.relative)
        frequency = firing.float().mean(dim=0)
        return firing, (frequency <= self.max_frequency) & firing.any(dim=0)

    def sample_scores(self, images: Tensor | None, units: Tensor) -> Tensor:
        firing, rare = self._rare(units)
        return (firing & rare).float().sum(dim=1)

    def unit_scores(self, images: Tensor | None, units: Tensor, flagged: Tensor | None) -> Tensor:
        firing, rare = self._rare(units)
        return torch.where(rare, 1 - firing.float().mean(dim=0), torch.zeros(()))
