"""Ablation specs: the YAML file, its arms and grid, and their expansion into cells (arm x seed).

An ablation YAML names the recipe script, a base config, common overrides, arms and/or a grid, and seeds::

    recipe: recipes/train_gan.py
    base: configs/gan/dcgan_digits.yaml
    schema: xai_train.config.gan:GANExperiment   # optional: overrides are checked before anything runs
    metric: fd                                   # the headline metric (plots, relative change)
    output_dir: runs/ablation/xaigan_alpha
    seeds: [0, 1, 2]
    threads: 1                                   # torch threads per cell (default 1; "auto": the recipe's)
    overrides: {train.max_steps: 1000, eval.enabled: true}
    arms:
      - {name: vanilla, baseline: true}
      - name: xaigan
        overrides: {xai.enabled: true}
        grid: {xai.alpha: [0.1, 0.2]}            # expands this arm: xaigan-alpha=0.1, xaigan-alpha=0.2
      - {name: small, overrides: {data.fraction: 0.2}, seeds: [0, 1]}   # an arm's own seeds (default: seeds)
    grid: {}                                     # top level: crossed with every arm

Optional, for a confirmatory study: which comparisons the page tests, declared before the cells run::

    primary: {arm: xaigan, metric: fd}           # tested alone at 0.05 (paired t-test) and by TOST
    secondary:                                   # Holm-corrected together (family-wise 0.05)
      - {arm: xaigan, metric: kid}
      - {arm: xaigan_20, baseline: vanilla_20, metric: fd}   # baseline: default the spec's baseline arm
    equivalence_margin: 0.10                     # TOST margin of the primary: +-10% of its baseline's mean

A comparison is the final value (last evaluation) of ``metric``, ``arm`` vs ``baseline``, paired by seed.
Without ``primary``/``secondary`` every arm x metric comparison is exploratory (Holm over all of them).

Everything here is pure: no file is written and nothing is run.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xai_train.config import ConfigError, load_config, read_yaml
from xai_train.config.common import EVAL_OUTPUTS

SPEC_KEYS = (
    "recipe",
    "base",
    "schema",
    "metric",
    "output_dir",
    "seeds",
    "threads",
    "overrides",
    "arms",
    "grid",
    "description",
    "primary",
    "secondary",
    "equivalence_margin",
)
COMPARISON_KEYS = ("arm", "metric", "baseline")
ARM_KEYS = ("name", "baseline", "overrides", "grid", "description", "seeds")


@dataclass(frozen=True)
class Arm:
    """One configuration under test: a name and its dotted overrides (on top of the common ones)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    description: str = ""
    seeds: tuple[int, ...] | None = None  # this arm's own seeds (None: the spec's)


@dataclass(frozen=True)
class PlannedComparison:
    """A comparison declared in the spec: the final ``metric`` of ``arm`` vs ``baseline``, paired by seed."""

    arm: str
    metric: str = "fd"
    baseline: str = ""  # "" in YAML means the spec's baseline arm; parse_spec fills the name in


@dataclass(frozen=True)
class AblationSpec:
    """A parsed ablation YAML (see the module docstring for the format)."""

    name: str
    recipe: str
    base: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: dict[str, Any] = field(default_factory=dict)
    schema: str = ""
    metric: str = "fd"
    output_dir: str = ""
    description: str = ""
    threads: int | None = 1  # torch threads of every cell: a CPU result depends on it (None: the recipe's default)
    primary: PlannedComparison | None = None  # the one confirmatory comparison (None: the page is exploratory)
    secondary: tuple[PlannedComparison, ...] = ()  # tested together, Holm-corrected
    equivalence_margin: float = 0.10  # TOST margin of the primary, relative to its baseline mean: 10% = +-10%

    @property
    def baseline(self) -> Arm:
        return next(arm for arm in self.arms if arm.baseline)


@dataclass(frozen=True)
class Cell:
    """One run: an arm with one seed. ``overrides`` are complete (common + arm), ``run.*`` excluded."""

    arm: str
    seed: int
    overrides: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.arm}/seed_{self.seed}"


def format_value(value: Any) -> str:
    """An override value as the recipe's command line parses it back (YAML flow style).

    Example:
        >>> format_value(0.2), format_value(True), format_value([0.5, 0.99]), format_value("grad")
        ('0.2', 'true', '[0.5, 0.99]', 'grad')
    """
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def grid_combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid of dotted keys (first key varies slowest).

    Example:
        >>> grid_combinations({"a.x": [1, 2], "b": ["u", "v"]})
        [{'a.x': 1, 'b': 'u'}, {'a.x': 1, 'b': 'v'}, {'a.x': 2, 'b': 'u'}, {'a.x': 2, 'b': 'v'}]
        >>> grid_combinations({})
        [{}]
    """
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"grid '{key}' must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def combination_name(prefix: str, combo: Mapping[str, Any]) -> str:
    """Arm name of one grid combination: the prefix, then ``<last key part>=<value>`` joined by ``-``.

    Example:
        >>> combination_name("xaigan", {"xai.alpha": 0.5, "xai.method": "grad"})
        'xaigan-alpha=0.5-method=grad'
    """
    parts = [f"{key.rsplit('.', 1)[-1]}={format_value(value)}" for key, value in combo.items()]
    return "-".join(([prefix] if prefix else []) + parts)


def expand_arms(arms: Sequence[Arm | Mapping[str, Any]], grid: Mapping[str, Sequence[Any]] | None = None) -> list[Arm]:
    """Expands arms (each may carry its own ``grid``) and crosses them with a top-level ``grid``.

    Args:
        arms: ``Arm`` objects or YAML mappings with ``name``, ``overrides``, ``baseline``, ``grid``.
            Empty: one unnamed arm, so a pure grid works.
        grid: dotted key -> list of values, crossed with every arm.

    Returns:
        The arms in order; exactly one is the baseline: the marked arm (its first grid combination if it
        is expanded), else the first arm.

    Raises:
        ConfigError: a duplicate name, an unknown arm key, or two marked baselines.

    Example:
        >>> arms = expand_arms([{"name": "vanilla", "baseline": True},
        ...                     {"name": "xai", "overrides": {"xai.enabled": True}, "grid": {"xai.alpha": [0.1, 1.0]}}])
        >>> [(a.name, a.overrides, a.baseline) for a in arms]  # doctest: +NORMALIZE_WHITESPACE
        [('vanilla', {}, True), ('xai-alpha=0.1', {'xai.enabled': True, 'xai.alpha': 0.1}, False),
         ('xai-alpha=1.0', {'xai.enabled': True, 'xai.alpha': 1.0}, False)]
    """
    expanded: list[Arm] = []
    for index, raw in enumerate(arms or [{"name": ""}]):
        if not isinstance(raw, (Arm, Mapping)):
            raise ConfigError(f"arm #{index + 1} must be a mapping with 'name' and 'overrides', got {raw!r}")
        entry = dataclasses.asdict(raw) if isinstance(raw, Arm) else raw
        unknown = sorted(set(entry) - set(ARM_KEYS))
        if unknown:
            raise ConfigError(f"arm #{index + 1}: unknown key '{unknown[0]}'; valid keys: {', '.join(ARM_KEYS)}")
        name, own_grid = str(entry.get("name", "")), dict(entry.get("grid") or {})
        if (not name and arms) or "/" in name or name != name.strip():
            raise ConfigError(f"arm #{index + 1}: name {name!r} must be non-empty, without '/' or outer spaces")
        seeds = entry.get("seeds")
        if seeds is not None:
            seeds = check_seeds(list(seeds) if isinstance(seeds, tuple) else seeds, f"arm '{name}': 'seeds'")
        for position, combo in enumerate(grid_combinations({**own_grid, **dict(grid or {})})):
            overrides = {**dict(entry.get("overrides") or {}), **combo}
            baseline = bool(entry.get("baseline")) and position == 0  # a gridded baseline: its first combination
            description = str(entry.get("description", ""))
            expanded.append(Arm(combination_name(name, combo) or "default", overrides, baseline, description, seeds))
    names = [arm.name for arm in expanded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"duplicate arm name '{duplicates[0]}'")
    marked = [arm.name for arm in expanded if arm.baseline]
    if len(marked) > 1:
        raise ConfigError(f"more than one baseline arm: {', '.join(marked)}; mark exactly one")
    if not marked:
        expanded[0] = dataclasses.replace(expanded[0], baseline=True)
    return expanded


def expand_cells(
    spec: AblationSpec, seeds: Sequence[int] | None = None, only_arms: Sequence[str] | None = None
) -> list[Cell]:
    """Cells of an ablation, seed-major: every arm with the first seed, then every arm with the next.

    Seed-major order means a run cut short still has every arm at equal seed counts, and a slow phase of a
    shared machine hits every arm alike. An arm with its own ``seeds`` runs those (an arm of 10 seeds beside
    arms of 16 has 10 cells, not 16 with 6 missing).

    Args:
        spec: the ablation.
        seeds: replaces ``spec.seeds`` and every arm's own seeds when given.
        only_arms: keep only these arms (names as expanded).

    Returns:
        One ``Cell`` per (arm, seed), with common overrides then the arm's (the arm wins).

    Raises:
        ConfigError: an unknown arm name in ``only_arms``.

    Example:
        >>> spec = AblationSpec("demo", "recipes/train_gan.py", "base.yaml",
        ...                     (Arm("a", {"x": 1}, True), Arm("b", {"x": 2})), seeds=(0, 1), overrides={"y": 0})
        >>> [c.key for c in expand_cells(spec)]
        ['a/seed_0', 'b/seed_0', 'a/seed_1', 'b/seed_1']
        >>> [(c.key, c.overrides) for c in expand_cells(spec, only_arms=["b"])]
        [('b/seed_0', {'y': 0, 'x': 2}), ('b/seed_1', {'y': 0, 'x': 2})]
        >>> fewer = dataclasses.replace(spec, arms=(spec.arms[0], Arm("b", {"x": 2}, seeds=(1,))))
        >>> [c.key for c in expand_cells(fewer)], [c.key for c in expand_cells(fewer, seeds=[5])]
        (['a/seed_0', 'a/seed_1', 'b/seed_1'], ['a/seed_5', 'b/seed_5'])
    """
    names = [arm.name for arm in spec.arms]
    for name in only_arms or ():
        if name not in names:
            raise ConfigError(f"unknown arm '{name}' in ablation '{spec.name}'; arms: {', '.join(names)}")
    arms = [arm for arm in spec.arms if not only_arms or arm.name in only_arms]
    if seeds is not None:
        check_unique_seeds(seeds, "--seeds")
    planned = {arm.name: tuple(seeds if seeds is not None else arm.seeds or spec.seeds) for arm in arms}
    order = list(dict.fromkeys(seed for arm in arms for seed in planned[arm.name]))
    return [
        Cell(arm.name, int(seed), {**spec.overrides, **arm.overrides})
        for seed in order
        for arm in arms
        if seed in planned[arm.name]
    ]


def check_unique_seeds(seeds: Sequence[int], source: str) -> None:
    """Raises a ConfigError naming a seed listed twice (its cell would run, and count, twice)."""
    repeated = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if repeated:
        raise ConfigError(f"{source}: seed {repeated[0]} is listed twice; give each seed once")


def check_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    """A non-empty list of distinct integers, as a tuple; a ConfigError naming ``where`` otherwise."""
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"{where} must be a non-empty list of integers, got {seeds!r}")
    check_unique_seeds(seeds, where)
    return tuple(seeds)


def parse_spec(data: Mapping[str, Any], name: str, source: str = "<ablation>") -> AblationSpec:
    """Builds an ``AblationSpec`` from a YAML mapping; errors name ``source`` and the offending key."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}'; valid keys: {', '.join(SPEC_KEYS)}")
    for required in ("recipe", "base"):
        if not data.get(required):
            raise ConfigError(
                f"{source}: missing '{required}' (the {'recipe script' if required == 'recipe' else 'base config'})"
            )
    seeds = check_seeds(data.get("seeds", [0, 1, 2]), f"{source}: 'seeds'")
    threads = parse_threads(data.get("threads", 1), f"{source}: 'threads'")
    metric, metrics = str(data.get("metric", "fd")), [name for names in EVAL_OUTPUTS.values() for name in names]
    if metric not in metrics:
        raise ConfigError(f"{source}: metric {metric!r} is not an evaluation output; choose from: {', '.join(metrics)}")
    for section in ("overrides", "grid"):
        if not isinstance(data.get(section) or {}, Mapping):
            raise ConfigError(f"{source}: '{section}' must be a mapping of dotted keys")
    if any(str(key).startswith("run.") for key in (data.get("overrides") or {})):
        raise ConfigError(f"{source}: 'run.*' is set per cell by the runner; remove it from 'overrides'")
    try:
        arms = expand_arms(data.get("arms") or [], data.get("grid") or {})
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    names, baseline = [arm.name for arm in arms], next(arm.name for arm in arms if arm.baseline)
    primary = None
    if data.get("primary") is not None:
        primary = parse_comparison(data["primary"], names, baseline, metrics, f"{source}: 'primary'")
    secondary_raw = data.get("secondary") or []
    if not isinstance(secondary_raw, list):
        raise ConfigError(f"{source}: 'secondary' must be a list of {{arm, metric, baseline}} mappings")
    secondary = tuple(
        parse_comparison(raw, names, baseline, metrics, f"{source}: 'secondary' #{index + 1}")
        for index, raw in enumerate(secondary_raw)
    )
    planned = ([primary] if primary else []) + list(secondary)
    repeated = sorted({f"{c.arm} vs {c.baseline} ({c.metric})" for c in planned if planned.count(c) > 1})
    if repeated:
        raise ConfigError(f"{source}: comparison {repeated[0]} is declared twice; declare each once")
    margin = data.get("equivalence_margin", 0.10)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise ConfigError(
            f"{source}: 'equivalence_margin' must be a fraction of the baseline mean in (0, 1), e.g. 0.10 "
            f"for +-10%, got {margin!r}"
        )
    return AblationSpec(
        name=name,
        recipe=str(data["recipe"]),
        base=str(data["base"]),
        arms=tuple(arms),
        seeds=tuple(seeds),
        overrides=dict(data.get("overrides") or {}),
        schema=str(data.get("schema", "")),
        metric=metric,
        output_dir=str(data.get("output_dir", "")),
        description=str(data.get("description", "")).strip(),
        threads=threads,
        primary=primary,
        secondary=secondary,
        equivalence_margin=float(margin),
    )


def parse_comparison(
    raw: Any, arms: Sequence[str], baseline: str, metrics: Sequence[str], where: str
) -> PlannedComparison:
    """One ``{arm, metric, baseline}`` entry of ``primary``/``secondary``; errors name ``where`` and the key.

    Example:
        >>> parse_comparison({"arm": "x"}, ["b", "x"], "b", ["fd", "kid"], "primary")
        PlannedComparison(arm='x', metric='fd', baseline='b')
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{arm: xaigan, metric: fd}}, got {raw!r}")
    unknown = sorted(set(raw) - set(COMPARISON_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; valid keys: {', '.join(COMPARISON_KEYS)}")
    arm, other = str(raw.get("arm", "")), str(raw.get("baseline") or baseline)
    metric = str(raw.get("metric", "fd"))
    for key, value in (("arm", arm), ("baseline", other)):
        if value not in arms:
            raise ConfigError(f"{where}: {key} {value!r} is not an arm; arms: {', '.join(arms)}")
    if arm == other:
        raise ConfigError(f"{where}: arm '{arm}' is compared with itself; name another 'baseline'")
    if metric not in metrics:
        raise ConfigError(f"{where}: metric {metric!r} is not an evaluation output; choose from: {', '.join(metrics)}")
    return PlannedComparison(arm, metric, other)


def parse_threads(value: Any, where: str) -> int | None:
    """A per-cell thread count: a whole number >= 1, or ``"auto"`` (``None``: each recipe's own default).

    Example:
        >>> parse_threads(1, "threads"), parse_threads("auto", "threads"), parse_threads("2", "threads")
        (1, None, 2)
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{where} must be a whole number >= 1 or 'auto', got {value!r}")
    return int(text)


def load_spec(path: str | Path, root: str | Path = ".") -> AblationSpec:
    """Reads an ablation YAML and checks that its recipe and base config exist (relative to ``root``).

    Args:
        path: the ablation YAML; its stem names the ablation.
        root: the directory the ``recipe`` and ``base`` paths are relative to (the repository root).

    Raises:
        ConfigError: unreadable file, unknown key, or a missing recipe/base file (the message names it).
    """
    path = Path(path)
    spec = parse_spec(read_yaml(path), path.stem, str(path))
    for key, value in (("recipe", spec.recipe), ("base", spec.base)):
        if not (Path(root) / value).is_file():
            raise ConfigError(f"{path}: {key} '{value}' does not exist (paths are relative to {Path(root).resolve()})")
    return spec


def validate_cells(spec: AblationSpec, cells: Sequence[Cell], root: str | Path = ".") -> None:
    """Builds every cell's config with ``spec.schema`` (if set): a typo fails before any run starts.

    Raises:
        ConfigError: naming the arm and the bad key or value.
    """
    if not spec.schema:
        return
    module_name, _, class_name = spec.schema.partition(":")
    if module_name.split(".")[:2] != ["xai_train", "config"] or not class_name:
        raise ConfigError(
            f"ablation '{spec.name}': schema '{spec.schema}' must name a config class in xai_train.config, "
            "e.g. xai_train.config.gan:GANExperiment (nothing else is imported)"
        )
    try:
        schema = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"ablation '{spec.name}': schema '{spec.schema}' cannot be imported ({err})") from err
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise ConfigError(f"ablation '{spec.name}': schema '{spec.schema}' is not a config class (a dataclass)")
    for cell in cells:
        try:
            load_config(schema, Path(root) / spec.base, [f"{k}={format_value(v)}" for k, v in cell.overrides.items()])
        except ConfigError as err:
            raise ConfigError(f"ablation '{spec.name}', arm '{cell.arm}': {err}") from err
