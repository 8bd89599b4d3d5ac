"""An independent second classifier (the "oracle") that judges whether a counterfactual really shows its target.

Dombrowski et al. check counterfactuals with a classifier that did not guide them: a pixel-space adversarial
example fools the explained classifier but rarely a different one; a counterfactual on the data manifold changes
the image itself, so an independent classifier agrees with its target class. The oracle here is an MLP (the
explained classifiers of the project are CNNs) with its own seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_train.metrics.classifier import accuracy


class MLPClassifier(nn.Module):
    """Flatten -> Linear -> ReLU -> Linear -> ReLU -> Linear: images (B, C, H, W) -> logits (B, K).

    Args:
        in_features: C·H·W.
        num_classes: K.
        hidden: width of the first hidden layer (the second has half of it).

    Example:
        >>> MLPClassifier(16, 3, hidden=8)(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def train_oracle(
    images: Tensor,
    labels: Tensor,
    *,
    hidden: int = 256,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 1e-3,
    noise: float = 0.1,
    holdout: float = 0.2,
    seed: int = 1,
) -> tuple[MLPClassifier, float]:
    """Trains an :class:`MLPClassifier` on a seeded split; Gaussian input noise makes it smoother.

    Args:
        images: (N, C, H, W) in [-1, 1].
        labels: (N,) int64.
        hidden: first hidden width.
        steps: Adam steps.
        batch_size: images per step.
        lr: Adam learning rate.
        noise: std of the Gaussian noise added to each training batch.
        holdout: share held out to measure accuracy.
        seed: initialisation, split and batches (use another seed than the explained classifier's).

    Returns:
        The oracle (eval mode, frozen) and its held-out accuracy.

    Example:
        >>> x = torch.rand(40, 1, 4, 4) * 2 - 1
        >>> y = (x.mean(dim=(1, 2, 3)) > 0).long()
        >>> oracle, acc = train_oracle(x, y, hidden=8, steps=5)
        >>> 0.0 <= acc <= 1.0
        True
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    num_holdout = max(1, int(holdout * len(labels)))
    test, train = order[:num_holdout], order[num_holdout:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        oracle = MLPClassifier(images[0].numel(), int(labels.max()) + 1, hidden)
    optimizer = torch.optim.Adam(oracle.parameters(), lr=lr)
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (batch_size,), generator=generator)]
        x = images[batch] + noise * torch.randn(images[batch].shape, generator=generator)
        loss = F.cross_entropy(oracle(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    oracle.eval().requires_grad_(False)
    return oracle, accuracy(oracle, images[test], labels[test])


@torch.no_grad()
def oracle_agreement(oracle: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """(B,) bool: does the oracle's prediction on each image equal its target class?

    Example:
        >>> oracle = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
        >>> oracle_agreement(oracle, torch.zeros(3, 1, 1, 1), torch.tensor([0, 0, 0])).shape
        torch.Size([3])
    """
    return oracle(images).argmax(dim=1) == targets
