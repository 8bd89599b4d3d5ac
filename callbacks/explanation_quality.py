"""``ExplanationQuality``: how good D's explanations are, logged while D trains (GAN or diffusion trainers).

Every ``every_n_steps`` steps it explains a fixed batch (real images you pass in, with optional ground-truth
masks) with each method, scores the maps with ``xai_train.explain.quality`` and logs
``explanation/<method>/<metric>`` scalars. How D's explanations evolve during training — when Grad-CAM
starts to point at the object, when it passes the randomisation check — is itself worth watching.

The work runs on the main process only (it changes nothing any rank holds: explainers leave D as it was)
and never touches the gradients of the step. For the diffusion trainer's time-conditioned D(x, t), pass
``timestep``: the maps explain D at that noise level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xai_train.callback import Callback, TrainState
from xai_train.diffusion import TimestepBound
from xai_train.explain.quality import (
    cascading_randomisation,
    explanation_infidelity,
    localisation_metrics,
    perturbation_metrics,
)
from xai_train.explain.report import bound_explainer, check_report_methods, layer_name

PERTURBATION = ("deletion", "insertion", "aopc", "deletion_random", "insertion_random", "aopc_random")
LOCALISATION = ("pointing_game", "mask_iou", "energy_in_mask")
OTHERS = ("cascade_final", "infidelity")
METRICS: tuple[str, ...] = (*PERTURBATION, *LOCALISATION, *OTHERS)
"""The metrics this callback can log (see ``xai_train.explain.quality``)."""


class ExplanationQuality(Callback):
    """Logs quality metrics of D's explanations of a fixed batch every ``every_n_steps`` steps.

    Args:
        images: (N, C, H, W) the fixed batch (e.g. 16 real images), moved to D's device when used.
        every_n_steps: log on steps that are multiples of this.
        methods: explainer names (the CAM suite or any ``xai_train.explain.METHODS`` name).
        metrics: names from :data:`METRICS` (localisation ones need ``masks``).
        masks: (N, 1, H, W) ground truth for the localisation metrics.
        removal: deletion/insertion removal (``constant``, ``blur``, ``road``).
        steps: deletion/insertion portions.
        timestep: for a time-conditioned D(x, t): the t at which D is explained; None for a GAN's D(x).
        model_key: the name of D in ``state.models``.
        prefix: tag prefix of the logged scalars.

    Example:
        >>> import torch
        >>> callback = ExplanationQuality(torch.zeros(4, 1, 16, 16), every_n_steps=50, methods=["gradcampp"])
        >>> callback.metrics
        ('deletion', 'deletion_random', 'insertion', 'insertion_random')
    """

    def __init__(
        self,
        images: Tensor,
        every_n_steps: int = 200,
        *,
        methods: Sequence[str] = ("gradcam", "layercam"),
        metrics: Sequence[str] = ("deletion", "deletion_random", "insertion", "insertion_random"),
        masks: Tensor | None = None,
        removal: str = "blur",
        steps: int = 8,
        timestep: int | None = None,
        model_key: str = "discriminator",
        prefix: str = "explanation",
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"ExplanationQuality: every_n_steps must be >= 1, got {every_n_steps}")
        if images.dim() != 4 or len(images) < 1:
            raise ValueError(f"ExplanationQuality: images must be a (N, C, H, W) batch, got {tuple(images.shape)}")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"ExplanationQuality: unknown metric(s) {unknown}; choose from: {', '.join(METRICS)}")
        if masks is None and any(m in LOCALISATION for m in metrics):
            raise ValueError(f"ExplanationQuality: metrics {list(LOCALISATION)} need masks=(N, 1, H, W) ground truth")
        if masks is not None and masks.shape != (len(images), 1, *images.shape[-2:]):
            raise ValueError(f"ExplanationQuality: masks must be {(len(images), 1, *images.shape[-2:])}")
        self.methods = check_report_methods(list(methods), single_logit=True)
        self.images = images.detach().cpu()
        self.masks = None if masks is None else masks.detach().cpu()
        self.every_n_steps = every_n_steps
        self.metrics = tuple(metrics)
        self.removal = removal
        self.steps = steps
        self.timestep = timestep
        self.model_key = model_key
        self.prefix = prefix

    def explained_model(self, state: TrainState) -> nn.Module:
        """The unwrapped D (bound to ``timestep`` for a time-conditioned D)."""
        if self.model_key not in state.models:
            raise KeyError(f"ExplanationQuality: no model {self.model_key!r} in state.models ({list(state.models)})")
        discriminator = state.accelerator.unwrap_model(state.models[self.model_key])
        if self.timestep is None:
            return discriminator
        device = next(discriminator.parameters()).device
        return TimestepBound(discriminator, torch.tensor(self.timestep, device=device))

    def measure(self, model: nn.Module) -> dict[str, float]:
        """``{"<prefix>/<method>/<metric>": value}`` for the fixed batch (the model is left as it was)."""
        device = next(model.parameters()).device
        images = self.images.to(device)
        masks = None if self.masks is None else self.masks.to(device)
        layer = layer_name(model, images, None)
        values = {}
        for method in self.methods:
            explain = bound_explainer(method, layer)
            maps = explain(model, images)
            scores: dict[str, Tensor | float] = {}
            if any(m in PERTURBATION for m in self.metrics):
                scores |= perturbation_metrics(
                    model, images, maps, removal=self.removal, steps=self.steps, score="logit"
                )
            if masks is not None and any(m in LOCALISATION for m in self.metrics):
                scores |= localisation_metrics(maps, masks)
            if "cascade_final" in self.metrics:
                scores["cascade_final"] = cascading_randomisation(model, images, explain).final
            if "infidelity" in self.metrics:
                maps_of = lambda x, e=explain: e(model, x).expand(-1, x.shape[1], -1, -1)  # noqa: E731
                scores["infidelity"] = explanation_infidelity(model, images, maps_of, n_perturb_samples=8)
            for metric in self.metrics:
                values[f"{self.prefix}/{method}/{metric}"] = float(torch.as_tensor(scores[metric]).float().mean())
        return values

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if state.step % self.every_n_steps or not state.is_main_process:
            return
        state.log_scalars(self.measure(self.explained_model(state)))
