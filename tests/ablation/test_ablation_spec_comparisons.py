"""The spec's planned comparisons: ``primary``, ``secondary`` and ``equivalence_margin`` parse and fail clearly."""

from __future__ import annotations

import pytest

from xai_train.ablation.spec import PlannedComparison, parse_spec
from xai_train.config import ConfigError


def spec_dict(**changes):
    data = {
        "recipe": "recipes/train_gan.py",
        "base": "configs/gan/dcgan_mnist5k.yaml",
        "arms": [
            {"name": "vanilla", "baseline": True},
            {"name": "xaigan"},
            {"name": "vanilla_20"},
            {"name": "xaigan_20"},
        ],
    }
    data.update(changes)
    return data


def test_the_confirmatory_schema_parses():
    spec = parse_spec(
        spec_dict(
            primary={"arm": "xaigan"},  # metric: default fd; baseline: default the spec's baseline arm
            secondary=[
                {"arm": "xaigan", "metric": "kid"},
                {"arm": "xaigan_20", "baseline": "vanilla_20", "metric": "fd"},
                {"arm": "xaigan_20", "baseline": "vanilla_20", "metric": "kid"},
            ],
            equivalence_margin=0.1,
        ),
        "confirmatory",
    )
    assert spec.primary == PlannedComparison("xaigan", "fd", "vanilla")
    assert spec.secondary == (
        PlannedComparison("xaigan", "kid", "vanilla"),
        PlannedComparison("xaigan_20", "fd", "vanilla_20"),
        PlannedComparison("xaigan_20", "kid", "vanilla_20"),
    )
    assert spec.equivalence_margin == 0.1


def test_without_the_keys_the_spec_is_exploratory():
    spec = parse_spec(spec_dict(), "plain")
    assert spec.primary is None and spec.secondary == () and spec.equivalence_margin == 0.10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"primary": {"arm": "xaigam"}}, r"'primary': arm 'xaigam' is not an arm; arms: vanilla, xaigan"),
        ({"primary": {"arm": "xaigan", "metric": "fid"}}, r"'primary': metric 'fid' is not an evaluation output"),
        ({"primary": {"arm": "xaigan", "alpha": 0.05}}, r"'primary': unknown key 'alpha'; valid keys: arm, metric"),
        ({"primary": {"arm": "vanilla"}}, r"arm 'vanilla' is compared with itself"),
        ({"primary": "xaigan"}, r"'primary' must be a mapping like \{arm: xaigan, metric: fd\}"),
        ({"secondary": {"arm": "xaigan"}}, r"'secondary' must be a list"),
        ({"secondary": [{"arm": "xaigan_20", "baseline": "vanila_20"}]}, r"'secondary' #1: baseline 'vanila_20'"),
        (
            {"primary": {"arm": "xaigan"}, "secondary": [{"arm": "xaigan", "metric": "fd"}]},
            r"comparison xaigan vs vanilla \(fd\) is declared twice",
        ),
        ({"equivalence_margin": 10}, r"'equivalence_margin' must be a fraction .* e.g. 0.10 for \+-10%, got 10"),
        ({"equivalence_margin": True}, r"'equivalence_margin' must be a fraction"),
        ({"primari": {"arm": "xaigan"}}, r"unknown key 'primari'"),
    ],
)
def test_bad_comparisons_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec_dict(**changes), "bad", "bad.yaml")
