"""``SaliencyLogger``: shows the saliency masks while a GAN trains.

Every ``every_n_steps`` generator steps it logs a grid of fakes beside their mask heat-map overlays
(``state.log_images``, TensorBoard) and the mask statistics (``state.log_scalars``); at the end of
training it writes the last grid to ``run_dir/saliency_overlay.png`` (main process only).

The mask comes from an :class:`~callbacks.xai_gradient_mask.XAIGradientMask` passed as ``source`` (its last
mask and fakes; put the logger after it in the list), or, without a source, from its own call of
``xai_train.explain.attribute`` on the logging steps (which does not touch the gradient).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from xai_train.callback import Callback, GradFn, TrainState
from xai_train.explain import (
    attribute,
    check_method,
    mask_statistics,
    saliency_grid,
    save_saliency_overlay,
    to_mask,
)

OVERLAY_FILE = "saliency_overlay.png"


class SaliencyLogger(Callback):
    """Logs fakes with mask overlays and mask statistics; writes an overlay PNG at the end.

    Args:
        every_n_steps: log on steps that are multiples of this.
        source: an ``XAIGradientMask`` whose last mask to show (anything with ``last_mask``,
            ``last_fake``, ``last_step`` and ``last_stats``); ``None`` = compute one here.
        method: explainer when there is no source (one of ``xai_train.explain.METHODS``).
        explainer_options: its options.
        mask_options: ``to_mask`` options when there is no source.
        max_images: fakes shown per grid.
        alpha: heat-map opacity.
        cmap: matplotlib colour map.
        prefix: tag prefix of the logged images and scalars.

    Example:
        >>> logger = SaliencyLogger(every_n_steps=100, method="gradcam")
        >>> logger.every_n_steps
        100
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        source: Any | None = None,
        *,
        method: str = "saliency",
        explainer_options: Mapping[str, Any] | None = None,
        mask_options: Mapping[str, Any] | None = None,
        max_images: int = 16,
        alpha: float = 0.5,
        cmap: str = "inferno",
        prefix: str = "saliency",
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.explainer_options = dict(explainer_options or {})
        if source is None:
            check_method(method, self.explainer_options)
        self.every_n_steps = every_n_steps
        self.source = source
        self.method = method
        self.mask_options = dict(mask_options or {})
        self.max_images = max_images
        self.alpha = alpha
        self.cmap = cmap
        self.prefix = prefix
        self._due = False
        self._own: tuple[Tensor, Tensor, dict[str, float]] | None = None

    def on_generator_forward(
        self, state: TrainState, fake: Tensor, d_fake: Tensor, discriminator: nn.Module
    ) -> GradFn | None:
        """Marks logging steps; without a source, explains the first ``max_images`` fakes. Returns None."""
        self._due = state.step % self.every_n_steps == 0
        if self._due and self.source is None:
            started = time.perf_counter()
            images = fake.detach()[: self.max_images]
            result = to_mask(
                attribute(discriminator, images, self.method, **self.explainer_options), **self.mask_options
            )
            stats = {k: float(v) for k, v in mask_statistics(result).items()}
            stats["explainer_seconds"] = time.perf_counter() - started
            self._own = (images, result.mask, stats)
        return None

    def latest(self) -> tuple[Tensor, Tensor, dict[str, float]] | None:
        """(fakes, mask, stats) of the newest mask, or None before the first one."""
        if self.source is None:
            return self._own
        if getattr(self.source, "last_mask", None) is None:
            return None
        return self.source.last_fake, self.source.last_mask, self.source.last_stats

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if not self._due:
            return
        self._due = False
        latest = self.latest()
        if latest is None:
            return
        fakes, mask, stats = latest
        state.log_scalars({f"{self.prefix}/{k}": v for k, v in stats.items()})
        if state.is_main_process:
            grid = saliency_grid(fakes, mask, max_images=self.max_images, alpha=self.alpha, cmap=self.cmap)
            state.log_images({f"{self.prefix}/overlay": grid})

    def on_train_end(self, state: TrainState) -> None:
        latest = self.latest()
        if latest is None or state.run_dir is None or not state.is_main_process:
            return
        fakes, mask, _ = latest
        save_saliency_overlay(
            fakes,
            mask,
            state.run_dir / OVERLAY_FILE,
            max_images=self.max_images,
            alpha=self.alpha,
            cmap=self.cmap,
        )
