"""Ablation specs: arms and grids expand into the right cells; bad specs fail with messages naming the key."""

from __future__ import annotations

import pytest
import yaml

from xai_train.ablation.spec import (
    expand_arms,
    expand_cells,
    format_value,
    grid_combinations,
    load_spec,
    parse_spec,
    validate_cells,
)
from xai_train.config import ConfigError


def spec_dict(**changes):
    data = {
        "recipe": "recipes/train_gan.py",
        "base": "configs/gan/dcgan_digits.yaml",
        "seeds": [0, 1, 2],
        "overrides": {"train.max_steps": 100},
        "arms": [
            {"name": "vanilla", "baseline": True},
            {"name": "xai", "overrides": {"xai.enabled": True}, "grid": {"xai.alpha": [0.1, 0.5]}},
        ],
    }
    data.update(changes)
    return data


def test_grid_is_the_cartesian_product_first_key_slowest():
    combos = grid_combinations({"a": [1, 2, 3], "b.c": ["x", "y"]})
    assert len(combos) == 6
    assert (
        combos[0] == {"a": 1, "b.c": "x"} and combos[1] == {"a": 1, "b.c": "y"} and combos[-1] == {"a": 3, "b.c": "y"}
    )


def test_arm_grid_expands_that_arm_only():
    spec = parse_spec(spec_dict(), "demo")
    assert [arm.name for arm in spec.arms] == ["vanilla", "xai-alpha=0.1", "xai-alpha=0.5"]
    assert spec.arms[0].overrides == {} and spec.arms[0].baseline
    assert spec.arms[2].overrides == {"xai.enabled": True, "xai.alpha": 0.5} and not spec.arms[2].baseline
    assert spec.baseline.name == "vanilla"


def test_top_level_grid_crosses_every_arm():
    arms = expand_arms([{"name": "a"}, {"name": "b", "overrides": {"k": 0}}], {"x": [1, 2], "y": [True]})
    assert [arm.name for arm in arms] == ["a-x=1-y=true", "a-x=2-y=true", "b-x=1-y=true", "b-x=2-y=true"]
    assert arms[3].overrides == {"k": 0, "x": 2, "y": True}
    assert arms[0].baseline and sum(arm.baseline for arm in arms) == 1  # first arm when none is marked


def test_a_gridded_baseline_arm_is_its_first_combination():
    arms = expand_arms([{"name": "a"}, {"name": "b", "baseline": True}], {"x": [1, 2]})
    assert [arm.name for arm in arms if arm.baseline] == ["b-x=1"]


def test_pure_grid_without_arms():
    arms = expand_arms([], {"train.lr_g": [1e-4, 2e-4]})
    assert [arm.name for arm in arms] == ["lr_g=0.0001", "lr_g=0.0002"]


def test_cells_are_seed_major_with_common_then_arm_overrides():
    spec = parse_spec(spec_dict(overrides={"train.max_steps": 100, "xai.alpha": 0.9}), "demo")
    cells = expand_cells(spec)
    assert len(cells) == 3 * 3
    assert [c.key for c in cells[:4]] == [
        "vanilla/seed_0",
        "xai-alpha=0.1/seed_0",
        "xai-alpha=0.5/seed_0",
        "vanilla/seed_1",
    ]
    assert cells[1].overrides == {"train.max_steps": 100, "xai.alpha": 0.1, "xai.enabled": True}  # the arm wins
    assert cells[0].overrides == {"train.max_steps": 100, "xai.alpha": 0.9}


def test_cells_with_other_seeds_and_only_some_arms():
    spec = parse_spec(spec_dict(), "demo")
    cells = expand_cells(spec, seeds=[7, 8], only_arms=["vanilla"])
    assert [(c.arm, c.seed) for c in cells] == [("vanilla", 7), ("vanilla", 8)]
    with pytest.raises(ConfigError, match="unknown arm 'vanila'.*vanilla, xai-alpha=0.1"):
        expand_cells(spec, only_arms=["vanila"])


def test_an_arm_with_its_own_seeds_plans_only_those():
    arms = [{"name": "vanilla", "baseline": True}, {"name": "small", "seeds": [1, 3]}]
    spec = parse_spec(spec_dict(arms=arms, seeds=[0, 1, 2]), "demo")
    assert [c.key for c in expand_cells(spec)] == [
        "vanilla/seed_0",
        "vanilla/seed_1",
        "small/seed_1",
        "vanilla/seed_2",
        "small/seed_3",
    ]
    assert [c.key for c in expand_cells(spec, seeds=[5])] == ["vanilla/seed_5", "small/seed_5"]  # --seeds: all arms


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arms": [{"name": "a", "seeds": []}]}, "arm 'a': 'seeds' must be a non-empty list of integers"),
        ({"arms": [{"name": "a", "seeds": [4, 4]}]}, "arm 'a': 'seeds': seed 4 is listed twice"),
        ({"arm": []}, "unknown key 'arm'"),
        ({"base": ""}, "missing 'base'"),
        ({"seeds": [0, "a"]}, "'seeds' must be a non-empty list of integers"),
        ({"overrides": {"run.seed": 1}}, "'run.\\*' is set per cell"),
        ({"arms": [{"name": "a", "overides": {}}]}, "arm #1: unknown key 'overides'"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, "duplicate arm name 'a'"),
        ({"arms": [{"name": "a/b"}]}, "arm #1: name 'a/b' must be non-empty, without '/'"),
        ({"arms": ["vanilla"]}, "arm #1 must be a mapping"),
        ({"arms": [{"name": "a", "baseline": True}, {"name": "b", "baseline": True}]}, "more than one baseline"),
        ({"grid": {"x": 3}}, "grid 'x' must be a non-empty list"),
        ({"seeds": [0, 1, 0]}, "seed 0 is listed twice"),
        ({"metric": "fid"}, "metric 'fid' is not an evaluation output; choose from: fd, kid, precision, recall"),
    ],
)
def test_bad_specs_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec_dict(**changes), "demo", "configs/ablation/demo.yaml")


def test_load_spec_names_a_missing_base_config(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(spec_dict(base="configs/gan/nope.yaml")))
    with pytest.raises(ConfigError, match="demo.yaml: base 'configs/gan/nope.yaml' does not exist"):
        load_spec(path)
    path.write_text(yaml.safe_dump(spec_dict()))
    assert load_spec(path).name == "demo"


def test_validate_cells_names_the_arm_and_the_unknown_key():
    spec = parse_spec(
        spec_dict(
            schema="xai_train.config.gan:GANExperiment",
            arms=[{"name": "ok"}, {"name": "typo", "overrides": {"xai.alhpa": 0.2}}],
        ),
        "demo",
    )
    with pytest.raises(ConfigError, match="arm 'typo': unknown key 'xai.alhpa'"):
        validate_cells(spec, expand_cells(spec))
    with pytest.raises(ConfigError, match="--seeds: seed 2 is listed twice"):
        expand_cells(spec, seeds=[2, 2])


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("os:system", "must name a config class in xai_train.config"),  # never imported, never called
        ("xai_train.config.common:EVAL_OUTPUTS", "is not a config class"),
        ("xai_train.config.gan:Nope", "cannot be imported"),
    ],
)
def test_validate_cells_takes_only_a_config_class_as_schema(schema, message):
    spec = parse_spec(spec_dict(schema=schema), "demo")
    with pytest.raises(ConfigError, match=message):
        validate_cells(spec, expand_cells(spec))


def test_format_value_round_trips_through_the_override_parser():
    from xai_train.config import parse_override

    for value in (0.2, 1e-4, 3, True, "grad", [0.5, 0.99], {"a": 1}):
        assert parse_override(f"k={format_value(value)}")[1] == value


@pytest.mark.parametrize(
    "name",
    ["xaigan_explainers", "xaigan_alpha", "xaigan_reference_vs_fixed", "xaigan_data_fraction", "diffusion_importance"],
)
def test_shipped_ablations_parse_and_validate(name):
    spec = load_spec(f"configs/ablation/{name}.yaml")
    assert sum(arm.baseline for arm in spec.arms) == 1 and len(expand_cells(spec)) >= 9
    validate_cells(spec, expand_cells(spec))


def test_threads_key_is_checked():
    base = {"recipe": "r.py", "base": "b.yaml", "arms": [{"name": "a"}]}
    assert parse_spec(base, "demo").threads == 1  # default: one thread per cell
    assert parse_spec({**base, "threads": "auto"}, "demo").threads is None
    assert parse_spec({**base, "threads": 4}, "demo").threads == 4
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ConfigError, match="'threads' must be a whole number >= 1 or 'auto'"):
            parse_spec({**base, "threads": bad}, "demo")
