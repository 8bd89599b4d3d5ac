from dataclasses import dataclass, field
from typing import Literal

import pytest

from xai_train.config import ConfigError, load_config, parse_override, save_config, to_dict
from xai_train.config.gan import GANExperiment


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    betas: tuple[float, float] = (0.5, 0.9)


@dataclass(frozen=True)
class Root:
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from_yaml\ninner:\n  steps: 5\n  lr: 1\n")
    cfg = load_config(Root, path, ["inner.steps=7", "flag=true", "inner.betas=[0.1, 0.2]"])
    assert cfg == Root(name="from_yaml", flag=True, inner=Inner(lr=1.0, steps=7, betas=(0.1, 0.2)))
    assert isinstance(cfg.inner.lr, float)


def test_scientific_notation_override_is_a_number():
    assert parse_override("inner.lr=2e-4") == ("inner.lr", 2e-4)
    assert load_config(Root, overrides=["inner.lr=2e-4"]).inner.lr == 2e-4


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("inner.stpes=3", "unknown key 'inner.stpes'; valid keys in inner: lr, steps, mode, betas"),
        ("nope=1", "unknown key 'nope'"),
        ("inner.steps=1.5", "inner.steps: expected an integer"),
        ("inner.steps=true", "inner.steps: expected an integer"),
        ("flag=3", "flag: expected true/false"),
        ("inner.mode=c", "inner.mode: 'c' is not one of 'a', 'b'"),
        ("inner.betas=[1]", "inner.betas: expected 2 values"),
        ("name.sub=1", "'name' is a value, not a section"),
        ("inner", "must look like key.subkey=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(Root, overrides=[override])
    assert fragment in str(err.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Root, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Root, bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'inner.lrr'"):
        load_config(Root, unknown)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Root, listy)


def test_configs_are_frozen():
    cfg = load_config(Root)
    with pytest.raises(AttributeError):
        cfg.name = "y"


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(GANExperiment, overrides=["train.max_steps=3", "data.name=shapes", "train.betas=[0.5, 0.99]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(GANExperiment, tmp_path / "config.yaml") == cfg
    assert to_dict(cfg)["train"]["betas"] == [0.5, 0.99]


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "gan"
    files = sorted(root.glob("*.yaml"))
    assert files, "no GAN configs shipped"
    for path in files:
        load_config(GANExperiment, path)
