"""The flaw highlighter (FH): a binary CNN telling real images (label 1) from the model's samples (label 0).

* :class:`FlawHighlighter` / :func:`build_highlighter`: a DCGAN-style conv stack with a pooled head (any
  ``nn.Module`` mapping (B, C, H, W) to (B, 1) logits works in its place).
* :func:`train_highlighter`: the authors' offline trainer — BCE, AdamW, OneCycle LR, real and generated
  batches paired per step, 10% of each held out, balanced held-out accuracy after every epoch, the best
  epoch's weights kept. It takes tensors; :func:`load_highlighter_folders` reads the authors' two image
  folders.
* :class:`OnlineHighlighter`: our variant, one BCE step per training step on the real batch against model
  samples from a replay buffer, gradients averaged over processes.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import reduce
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xai_train.data import load_image_folder

GradReducer = Callable[[Tensor], Tensor]
"""Averages a gradient over processes (e.g. ``lambda g: accelerator.reduce(g, "mean")``)."""


class FlawHighlighter(nn.Module):
    """A DCGAN-style FH with a global-average-pooled head: (B, C, H, W) → (B, 1) logits (real = positive).

    ``features``: stride-2 4×4 convs with LeakyReLU(0.2) (no BatchNorm) down to an 8×8 map, then a 3×3 conv
    (the Grad-CAM layer) and LeakyReLU; ``head``: mean over positions, then a linear layer. Why not the DCGAN
    discriminator's 4×4-conv head: its readout is location-specific, and Grad-CAM's spatially averaged
    weights then miss a planted artifact (measured: the FAM peak landed off the planted blob for 3 of 4
    placements); with a pooled head Grad-CAM is the class activation map, and 8×8 beats 4×4 resolution.

    Args:
        image_size: H = W, a power of two >= 8.
        channels: image channels.
        width: channels of the first conv (doubling per stage).

    Example:
        >>> FlawHighlighter(32, 1, width=4)(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1])
    """

    def __init__(self, image_size: int, channels: int, width: int = 16):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"FlawHighlighter: image_size must be a power of two >= 8, got {image_size}")
        stages = (image_size // 8).bit_length() - 1  # 32 -> 2 stride-2 stages down to 8x8
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            layers += [nn.Conv2d(c_in, width * 2**i, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = width * 2**i
        layers += [nn.Conv2d(c_in, 2 * c_in, 3, 1, 1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(reduce(self.features(x), "b c h w -> b c", "mean"))


def build_highlighter(image_size: int, channels: int, width: int = 16, seed: int = 0) -> nn.Module:
    """The default FH (:class:`FlawHighlighter`), initialised from ``seed`` without touching the global RNG.

    No BatchNorm, so a sample's map does not depend on the rest of its batch (the authors' VGG16 ``features``
    has none either).

    Example:
        >>> fh = build_highlighter(32, 1, width=8)
        >>> fh(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1])
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FlawHighlighter(image_size, channels, width)


def bce_loss(highlighter: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """``(BCE(FH(real), 1) + BCE(FH(fake), 0)) / 2`` on logits (the authors' loss, on probabilities)."""
    d_real, d_fake = highlighter(real), highlighter(fake)
    return (
        F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    ) / 2


def reduce_gradients(module: nn.Module, reduce_grad: GradReducer | None) -> None:
    """Replaces every parameter gradient of ``module`` by ``reduce_grad(grad)`` (nothing when it is ``None``)."""
    if reduce_grad is None:
        return
    for p in module.parameters():
        if p.grad is not None:
            p.grad = reduce_grad(p.grad)


@torch.no_grad()
def highlighter_accuracy(highlighter: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 256) -> float:
    """Balanced accuracy ``(acc_real + acc_fake) / 2`` at threshold 0.5, in eval mode (mode restored).

    Example:
        >>> fh = nn.Sequential(nn.Flatten(), nn.Linear(1, 1))
        >>> with torch.no_grad():
        ...     _ = fh[1].weight.fill_(1.0), fh[1].bias.zero_()
        >>> highlighter_accuracy(fh, torch.ones(4, 1, 1, 1), -torch.ones(4, 1, 1, 1))
        1.0
    """
    was_training = highlighter.training
    highlighter.eval()
    try:
        real_ok = torch.cat([highlighter(x) > 0 for x in real.split(batch_size)]).float().mean()
        fake_ok = torch.cat([highlighter(x) <= 0 for x in fake.split(batch_size)]).float().mean()
    finally:
        highlighter.train(was_training)
    return float((real_ok + fake_ok) / 2)


@dataclasses.dataclass
class HighlighterReport:
    """What :func:`train_highlighter` did: per-epoch mean loss and held-out accuracy, and the kept epoch."""

    losses: list[float]
    accuracies: list[float]
    best_epoch: int
    best_accuracy: float


def _split(images: Tensor, held_out: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    order = torch.randperm(len(images), generator=generator)
    n_test = int(len(images) * held_out)
    return images[order[n_test:]], images[order[:n_test]]


def train_highlighter(
    highlighter: nn.Module,
    real: Tensor,
    fake: Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 1e-5,
    betas: tuple[float, float] = (0.5, 0.999),
    held_out: float = 0.1,
    seed: int = 0,
    reduce_grad: GradReducer | None = None,
) -> HighlighterReport:
    """Trains FH offline the authors' way and leaves it with the best held-out epoch's weights (eval mode off).

    Per epoch, shuffled real and generated batches are paired (the shorter set sets the epoch length);
    AdamW with OneCycle (10% warm-up, ``div_factor`` 25, ``final_div_factor`` 1e4) over ``epochs`` x the real
    batches per epoch, as in their ``train_fh.py``.

    Args:
        highlighter: FH (B, C, H, W) → (B, 1) logits; trained in place.
        real: (N, C, H, W) real images; fake: (M, C, H, W) generated images (same range).
        epochs, batch_size, lr, betas: the authors' defaults (their backbone is a pretrained VGG16; a small FH
            trained from scratch wants a larger ``lr``).
        held_out: fraction of each set held out for the accuracy (0 = no held-out set: the last epoch is kept).
        seed: the split and the batch order (identical on every rank).
        reduce_grad: averages gradients over processes when every rank trains on its own share.

    Returns:
        A :class:`HighlighterReport`.

    Example:
        >>> fh = build_highlighter(32, 1, width=4)
        >>> real, fake = torch.rand(40, 1, 32, 32), -torch.rand(40, 1, 32, 32)
        >>> train_highlighter(fh, real, fake, epochs=3, batch_size=8, lr=1e-2).best_accuracy
        1.0
    """
    if not 0 <= held_out < 1:
        raise ValueError(f"train_highlighter: held_out must be in [0, 1), got {held_out}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"train_highlighter: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    train_real, test_real = _split(real, held_out, generator)
    train_fake, test_fake = _split(fake, held_out, generator)
    steps_per_epoch = max(1, -(-len(train_real) // batch_size))
    optimizer = torch.optim.AdamW(highlighter.parameters(), lr=lr, betas=betas)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=0.1,
        div_factor=25,
        final_div_factor=1e4,
    )
    report = HighlighterReport([], [], 0, -1.0)
    best_state = copy.deepcopy(highlighter.state_dict())
    highlighter.train()
    for epoch in range(1, epochs + 1):
        real_order = torch.randperm(len(train_real), generator=generator).split(batch_size)
        fake_order = torch.randperm(len(train_fake), generator=generator).split(batch_size)
        losses = []
        for real_index, fake_index in zip(real_order, fake_order, strict=False):
            loss = bce_loss(highlighter, train_real[real_index], train_fake[fake_index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            reduce_gradients(highlighter, reduce_grad)
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
        report.losses.append(float(torch.stack(losses).mean()))
        if held_out == 0:  # nothing to select on: keep the last epoch
            report.accuracies.append(float("nan"))
            report.best_epoch, report.best_accuracy = epoch, float("nan")
            best_state = highlighter.state_dict()
            continue
        accuracy = highlighter_accuracy(highlighter, test_real, test_fake)
        report.accuracies.append(accuracy)
        if accuracy > report.best_accuracy:  # strictly better, as the authors' checkpointing
            report.best_epoch, report.best_accuracy = epoch, accuracy
            best_state = copy.deepcopy(highlighter.state_dict())
    highlighter.load_state_dict(best_state)
    return report


def load_highlighter_folders(
    real_dir: str | Path, fake_dir: str | Path, image_size: int, channels: int
) -> tuple[Tensor, Tensor]:
    """The authors' offline data: every image below ``real_dir`` and ``fake_dir``, as (N, C, S, S) in [-1, 1]."""
    real = load_image_folder(real_dir, image_size=image_size, channels=channels, class_folders=False).images
    fake = load_image_folder(fake_dir, image_size=image_size, channels=channels, class_folders=False).images
    return real, fake


class OnlineHighlighter:
    """FH trained during diffusion training: one AdamW step per call on (real batch, model samples).

    Args:
        highlighter: FH; trained in place.
        lr, betas: AdamW settings.
        reduce_grad: averages gradients over processes (each rank sees its own real batch).

    Example:
        >>> online = OnlineHighlighter(build_highlighter(32, 1, width=4), lr=1e-3)
        >>> loss = online.step(torch.rand(4, 1, 32, 32), -torch.rand(4, 1, 32, 32))
        >>> online.steps, bool(loss > 0)
        (1, True)
    """

    def __init__(
        self,
        highlighter: nn.Module,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        reduce_grad: GradReducer | None = None,
    ):
        self.highlighter = highlighter
        self.optimizer = torch.optim.AdamW(highlighter.parameters(), lr=lr, betas=betas)
        self.reduce_grad = reduce_grad
        self.steps = 0

    def step(self, real: Tensor, fake: Tensor) -> Tensor:
        """One BCE step on ``real`` and ``fake`` (B, C, H, W); returns the detached loss."""
        self.highlighter.train()
        with torch.enable_grad():
            loss = bce_loss(self.highlighter, real.detach(), fake.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        reduce_gradients(self.highlighter, self.reduce_grad)
        self.optimizer.step()
        self.steps += 1
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def save_highlighter(highlighter: nn.Module, path: str | Path) -> Path:
    """Writes FH's weights as safetensors (load them with :func:`offline_highlighter`'s ``checkpoint``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in highlighter.state_dict().items()}, str(path))
    return path


def offline_highlighter(
    image_size: int,
    channels: int,
    *,
    width: int = 16,
    checkpoint: str | Path = "",
    real_dir: str | Path = "",
    fake_dir: str | Path = "",
    seed: int = 0,
    **train_options: Any,
) -> nn.Module | None:
    """A ready FH for a run: loaded from ``checkpoint`` (safetensors), or trained on the authors' two image
    folders (:func:`train_highlighter` with ``train_options``); ``None`` when neither is given (the callback then
    trains one at the switch on EMA samples).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "fh.safetensors")
        >>> path = save_highlighter(build_highlighter(32, 1, width=4), path)
        >>> offline_highlighter(32, 1, width=4, checkpoint=path).features[0].weight.shape
        torch.Size([4, 1, 4, 4])
        >>> offline_highlighter(32, 1) is None
        True
    """
    if bool(real_dir) != bool(fake_dir):
        raise ValueError("offline_highlighter: give both real_dir and fake_dir, or neither")
    if checkpoint and real_dir:
        raise ValueError("offline_highlighter: give a checkpoint or the image folders, not both")
    if not checkpoint and not real_dir:
        return None
    highlighter = build_highlighter(image_size, channels, width, seed=seed)
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"flaw highlighter checkpoint '{checkpoint}' does not exist")
        highlighter.load_state_dict(load_file(str(checkpoint)))
        return highlighter
    real, fake = load_highlighter_folders(real_dir, fake_dir, image_size, channels)
    train_highlighter(highlighter, real, fake, seed=seed, **train_options)
    return highlighter
