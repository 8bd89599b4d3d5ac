"""Frozen-dataclass configs with YAML files and strict dotted overrides.

A config is a tree of frozen dataclasses. ``load_config`` starts from the defaults, merges a YAML file,
then applies ``a.b=value`` overrides from the command line. Every key is checked against the schema:
an unknown key or a value of the wrong type raises ``ConfigError`` naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from xai_train.atomic import atomic_write
from xai_train.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or override does not match the schema, or a value is out of its range."""


def check_fields(config: Any, rule: str, test: Callable[[Any], bool], *names: str) -> None:
    """Raises a ConfigError ``"<name>=<value>: <rule>"`` for the first field of ``config`` failing ``test``.

    Used in the schemas' ``__post_init__``: the loader puts the section in front (``train.max_steps=-3: ...``).
    Write tests as ``v >= low`` rather than ``not v < low`` so that NaN fails them.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Train:
        ...     max_steps: int = -3
        >>> check_fields(Train(), "must be >= 1", lambda v: v >= 1, "max_steps")
        Traceback (most recent call last):
        ...
        xai_train.config.core.ConfigError: max_steps=-3: must be >= 1
    """
    for name in names:
        value = getattr(config, name)
        if not test(value):
            raise ConfigError(f"{name}={value!r}: {rule}")


def check_like_section(section: type, owner: str, arguments: Mapping[str, Any]) -> None:
    """Checks an API object's arguments with the config section of the same options (built enabled).

    Only the arguments named like a field of ``section`` are passed, so a callback can hand over its
    ``locals()``; the API and the CLI then accept and reject the same values.

    Args:
        section: a frozen-dataclass config section with an ``enabled`` field and checks in ``__post_init__``.
        owner: the API object's name, put in front of the message.
        arguments: the values to check, by field name (other names are ignored).

    Raises:
        UserError: ``"<owner>: <the section's message>"``.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Noise:
        ...     enabled: bool = False
        ...     scale: float = 1.0
        ...     def __post_init__(self):
        ...         check_fields(self, "must be > 0", lambda v: v > 0, "scale")
        >>> check_like_section(Noise, "NoiseCallback", {"scale": -1.0, "seed": 3})
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: NoiseCallback: scale=-1.0: must be > 0
    """
    names = {f.name for f in dataclasses.fields(section)} - {"enabled"}
    try:
        section(enabled=True, **{name: value for name, value in arguments.items() if name in names})
    except UserError as error:
        raise UserError(f"{owner}: {error}") from None


def check_choices(config: Any) -> None:
    """Raises a ConfigError for the first ``Literal[...]`` field of ``config`` holding another value, so that
    a section built in Python is checked like one loaded from YAML.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Train:
        ...     loss: Literal["bce", "hinge"] = "mse"
        >>> check_choices(Train())
        Traceback (most recent call last):
        ...
        xai_train.config.core.ConfigError: loss='mse': choose one of 'bce', 'hinge'
    """
    for name, tp in _field_types(type(config)).items():
        if typing.get_origin(tp) is Literal and getattr(config, name) not in typing.get_args(tp):
            choices = ", ".join(map(repr, typing.get_args(tp)))
            raise ConfigError(f"{name}={getattr(config, name)!r}: choose one of {choices}")


@contextmanager
def as_config_error() -> Iterator[None]:
    """Turns the ValueError/TypeError of a library validator (called from a ``__post_init__``) into a
    ConfigError with the same message, so that the loader names the section.

    Example:
        >>> with as_config_error():
        ...     raise ValueError("rule='add': choose scale or product")
        Traceback (most recent call last):
        ...
        xai_train.config.core.ConfigError: rule='add': choose scale or product
    """
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _build(schema: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    fields = _field_types(schema)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'; valid keys in {prefix.rstrip('.') or 'the config'}: "
            + ", ".join(fields)
        )
    kwargs = {name: _coerce(v, fields[name], prefix + name) for name, v in values.items()}
    try:
        return schema(**kwargs)
    except ConfigError as err:  # a range check of the section's __post_init__: name the section
        raise ConfigError(f"{prefix}{err}") from None


def _set_dotted(tree: dict[str, Any], schema: type, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node, node_schema = tree, schema
    for depth, part in enumerate(parts):
        fields = _field_types(node_schema)
        if part not in fields:
            where = ".".join(parts[:depth]) or "the config"
            raise ConfigError(f"unknown key '{dotted}'; valid keys in {where}: {', '.join(fields)}")
        if depth == len(parts) - 1:
            node[part] = value
            return
        if not dataclasses.is_dataclass(fields[part]):
            raise ConfigError(f"'{'.'.join(parts[: depth + 1])}' is a value, not a section; cannot set '{dotted}'")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{'.'.join(parts[: depth + 1])}' must be a section (mapping), got {node!r}")
        node_schema = fields[part]


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``"train.lr=2e-4"`` into ``("train.lr", 0.0002)``; the value is parsed as YAML.

    Example:
        >>> parse_override("train.betas=[0.5, 0.99]")
        ('train.betas', [0.5, 0.99])
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': the value is not valid YAML ({' '.join(str(err).split())})") from None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    return key.strip(), value


def _looks_numeric(text: str) -> bool:
    # YAML 1.1 reads "2e-4" as a string; a user typing it on the command line means a number.
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Builds a config: schema defaults, then the YAML file, then ``key=value`` overrides.

    Args:
        schema: the root dataclass type.
        path: optional YAML file.
        overrides: strings like ``"train.max_steps=200"``.

    Returns:
        A frozen instance of ``schema``.

    Raises:
        ConfigError: unknown key, wrong type, or unreadable file (the message names it).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Opt:
        ...     lr: float = 1e-3
        >>> load_config(Opt, overrides=["lr=0.01"]).lr
        0.01
    """
    tree: dict[str, Any] = {}
    if path is not None:
        tree = read_yaml(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, schema, key, value)
    return _build(schema, tree)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory, not a YAML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file '{path}' {problem}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file '{path}' is not UTF-8 text (byte {err.start}: {err.object[err.start : err.start + 1]!r}); "
            "give a YAML file saved as UTF-8"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"config file '{path}' holds NUL bytes: a binary file, not YAML")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
    return dict(data)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def save_config(config: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML (atomically, through ``xai_train.atomic``)."""
    atomic_write(path, yaml.safe_dump(to_dict(config), sort_keys=False))
