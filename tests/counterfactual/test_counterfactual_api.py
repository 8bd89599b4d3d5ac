"""The package exports every helper the docs show, and the searches warn once about start images outside [-1, 1]."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import xai_train.counterfactual as counterfactual
from xai_train.counterfactual import FlowDecoder, RealNVP, manifold_counterfactuals, pixel_adversarial

DOCS = Path(__file__).resolve().parents[2] / "docs" / "counterfactuals.md"


def test_the_helpers_are_exported_and_every_name_of_the_api_section_exists():
    from xai_train.counterfactual import ganmex, oracle, toy

    assert counterfactual.train_oracle is oracle.train_oracle
    assert counterfactual.oracle_agreement is oracle.oracle_agreement
    assert counterfactual.latent_baseline is ganmex.latent_baseline
    assert counterfactual.train_translator is ganmex.train_translator
    assert (
        counterfactual.sample_circle is toy.sample_circle
        and counterfactual.HalfPlaneClassifier is toy.HalfPlaneClassifier
    )
    api = DOCS.read_text().split("## API", 1)[1]
    table = [line for line in api.splitlines() if line.startswith("| ") and "---" not in line][1:]
    named = {name for line in table for name in re.findall(r"`(\w+)", line.split("|")[2])}
    assert len(named) >= 30
    assert sorted(named - set(counterfactual.__all__)) == []
    assert sorted(set(counterfactual.__all__) - named - {"warn_if_outside"}) == []  # the table lists them all


def linear_classifier() -> nn.Module:
    f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        f[1].weight.copy_(torch.tensor([[2.0, 2, 2, 2], [-2, -2, -2, -2]]))
        f[1].bias.zero_()
    return f


def test_pixel_search_warns_once_for_a_start_image_outside_and_then_uses_the_clipped_image():
    images = torch.tensor([0.5, -0.2, 3.0, 0.1]).reshape(1, 1, 2, 2).repeat(3, 1, 1, 1)
    images[1] = 0.0  # inside: two of three start images are outside
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pixel_adversarial(linear_classifier(), images, 0, lr=0.05, max_steps=20)
    messages = [str(w.message) for w in caught if "start images" in str(w.message)]
    assert len(messages) == 1  # once per call, not once per step
    assert messages[0].startswith("adversarial: 2 of 3 start images lie outside [-1, 1] (values in [-0.2, 3])")
    assert float(result.counterfactuals.max()) <= 1.0


def test_inside_start_images_give_no_warning_and_a_manifold_start_outside_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        pixel_adversarial(linear_classifier(), torch.zeros(2, 1, 2, 2), 0, lr=0.05, max_steps=5)
    decoder = FlowDecoder(RealNVP(4, num_couplings=2, hidden=4), shape=(1, 2, 2))
    with pytest.warns(UserWarning, match=r"^counterfactual: 1 of 2 start images lie outside \[-1, 1\]"):
        manifold_counterfactuals(
            linear_classifier(),
            decoder,
            torch.tensor([0.0, 1.5]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous(),
            1,
            lr=0.05,
            max_steps=5,
        )
