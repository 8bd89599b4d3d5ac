"""Validation of every xAI-GAN option in one place: ``callbacks.XAIGradientMask`` and the ``xai`` config
section both call :func:`check_xaigan_options`, so the API and the CLI accept and reject the same values.

Each message starts with the option's name and value (``alpha=-3.0: ...``); the config loader puts the
section in front (``xai.alpha=-3.0: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from xai_train.errors import UserError
from xai_train.explain.attribute import METHODS, check_method
from xai_train.explain.free import FREE_METHOD
from xai_train.explain.mask import REDUCTIONS, SCOPES
from xai_train.xaigan.rules import RULES

PRESETS: tuple[str, ...] = ("reference",)
"""``"reference"``: the xAI-GAN reference code's selection and mask (``xai_train.xaigan.reference``)."""

REFERENCE_METHODS: tuple[str, ...] = ("saliency", "deeplift_shap", "lime")
"""The explainers the reference code offers."""


def check_alpha(alpha: float, *, allow_sign_flip: bool = False) -> float:
    """Returns ``alpha`` as a float if it is a finite number >= -1 (or any finite number with the opt-in).

    With the rule ``g ⊙ (1 + α·M)`` and ``M ∈ [0, 1]``: α in [-1, 0) damps the gradient where the mask is
    high, and α < -1 flips its sign where ``M > 1/|α|``, so the generator climbs its loss there. That is
    rejected unless ``allow_sign_flip=True`` says it is meant.

    Example:
        >>> check_alpha(0.2), check_alpha(-3, allow_sign_flip=True)
        (0.2, -3.0)
        >>> check_alpha(-3)
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: alpha=-3: below -1 the rule g*(1+alpha*M) flips the gradient's sign where M > 1/|alpha| (G then climbs its loss there); use alpha >= -1, or set allow_sign_flip=true to do it on purpose
    """  # noqa: E501
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha={alpha!r}: must be a number (the boost at mask = 1; the paper uses 0.2)")
    if not math.isfinite(alpha):
        raise UserError(f"alpha={alpha!r}: must be finite (the boost at mask = 1; the paper uses 0.2)")
    if alpha < -1 and not allow_sign_flip:
        raise UserError(
            f"alpha={alpha!r}: below -1 the rule g*(1+alpha*M) flips the gradient's sign where M > 1/|alpha| "
            "(G then climbs its loss there); use alpha >= -1, or set allow_sign_flip=true to do it on purpose"
        )
    return float(alpha)


def _check_int(name: str, value: Any, low: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: must be an integer >= {low} ({why})")
    if value < low:
        raise UserError(f"{name}={value!r}: must be >= {low} ({why})")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r}: must be True or False")


def check_xaigan_options(
    method: str | None = None,
    explainer_options: Mapping[str, Any] | None = None,
    *,
    rule: str = "scale",
    alpha: float = 0.2,
    allow_sign_flip: bool = False,
    alpha_warmup_steps: int = 0,
    only_rejected: bool = False,
    start_step: int = 0,
    every_n_steps: int = 1,
    preset: str | None = None,
    absolute: bool = True,
    reduce: str = "max",
    blur_sigma: float = 0.0,
    scope: str = "sample",
) -> tuple[str, dict[str, Any]]:
    """Checks the options of ``XAIGradientMask`` (same names and meaning) and resolves the defaults.

    Args:
        method: ``None`` (``"grad"``, or ``"saliency"`` with the reference preset), ``"grad"``, or a name
            of ``xai_train.explain.METHODS``.
        explainer_options: the explainer's options (``attribute``'s ``bn_mode``/``output`` and its own).
        rule, alpha, allow_sign_flip, alpha_warmup_steps, only_rejected, start_step, every_n_steps, preset,
            absolute, reduce, blur_sigma, scope: see ``callbacks.XAIGradientMask``.

    Returns:
        ``(method, explainer_options)`` as the callback uses them (the reference preset adds its defaults).

    Raises:
        UserError: a value out of range or an unknown name (a ``ValueError``).
        TypeError: a value of the wrong type, or an explainer option the method does not take.

    Example:
        >>> check_xaigan_options(preset="reference")
        ('saliency', {'output': 'probability', 'abs': True})
        >>> check_xaigan_options(0.2)
        Traceback (most recent call last):
        ...
        TypeError: method=0.2: must be an explainer name such as 'grad' or 'saliency' (did you mean alpha=0.2?)
    """
    if preset is not None and preset not in PRESETS:
        raise UserError(f"preset={preset!r}: unknown preset; choose none or one of: {', '.join(PRESETS)}")
    if method is not None and not isinstance(method, str):
        raise TypeError(
            f"method={method!r}: must be an explainer name such as 'grad' or 'saliency'"
            + (f" (did you mean alpha={method!r}?)" if isinstance(method, (int, float)) else "")
        )
    method = method or ("saliency" if preset == "reference" else FREE_METHOD)
    if method != FREE_METHOD and method not in METHODS:
        raise UserError(f"method={method!r}: unknown explainer; choose one of: {FREE_METHOD}, {', '.join(METHODS)}")
    if method == FREE_METHOD and preset == "reference":
        raise UserError(
            "method='grad' does not work with preset='reference' (its fill value 1 needs a mask computed before "
            f"the backward, and is not scale-free); choose method from: {', '.join(REFERENCE_METHODS)}"
        )
    if rule not in RULES:
        raise UserError(f"rule={rule!r}: unknown rule; choose one of: {', '.join(RULES)}")
    if preset == "reference" and rule != "scale":
        raise UserError(f"rule={rule!r}: preset='reference' reproduces g * (1 + alpha * M); rule must be 'scale'")
    if explainer_options is not None and not isinstance(explainer_options, Mapping):
        raise TypeError(f"explainer_options={explainer_options!r}: must be a mapping of option names to values")
    options = dict(explainer_options or {})
    if preset == "reference":
        options.setdefault("output", "probability")
        if method == "saliency":
            options.setdefault("abs", True)  # captum Saliency's default, as the reference
    if method == FREE_METHOD:
        if options:
            raise UserError(f"explainer_options={options!r}: method 'grad' takes no explainer options")
    else:
        try:
            check_method(method, options)
        except (ValueError, TypeError) as err:
            raise type(err)(f"explainer_options={dict(explainer_options or {})!r}: {err}") from None
        if options.get("target") not in (None, 0):  # a CAM's class index: D has one logit
            raise UserError(
                f"explainer_options.target={options['target']!r}: the discriminator has one logit; "
                "use target 0 or leave it out"
            )
    check_alpha(alpha, allow_sign_flip=allow_sign_flip)
    _check_bool("allow_sign_flip", allow_sign_flip)
    _check_int("alpha_warmup_steps", alpha_warmup_steps, 0, "0 = no ramp")
    _check_int("start_step", start_step, 0, "the first step with a mask")
    _check_int("every_n_steps", every_n_steps, 1, "1 masks every step")
    _check_bool("only_rejected", only_rejected)
    _check_bool("absolute", absolute)
    if reduce not in REDUCTIONS:
        raise UserError(f"reduce={reduce!r}: unknown reduce; choose one of: {', '.join(REDUCTIONS)}")
    if scope not in SCOPES:
        raise UserError(f"scope={scope!r}: unknown scope; choose one of: {', '.join(SCOPES)}")
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or not blur_sigma >= 0:
        raise UserError(f"blur_sigma={blur_sigma!r}: must be a number >= 0 (pixels; 0 = no blur)")
    if math.isinf(blur_sigma):
        raise UserError(f"blur_sigma={blur_sigma!r}: must be finite (pixels; 0 = no blur)")
    return method, options
