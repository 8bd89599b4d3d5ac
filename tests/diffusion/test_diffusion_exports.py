"""What ``xai_train.diffusion`` (and its ``self_refine`` subpackage) export: every public name of the sampling,
schedule and pipeline modules, each the very object of its module; the pipelines load on first use."""

import importlib
import inspect
import sys

import pytest

import xai_train.diffusion as diffusion
import xai_train.diffusion.self_refine as self_refine

# Modules whose every public class, function and constant the package exports.
FULLY_EXPORTED = ("importance_schedule", "noise", "pipeline", "sampler", "samplers")


def public_names(module) -> set[str]:
    """Classes and functions defined in ``module``, constants (UPPER_CASE) and type aliases named in CamelCase."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "TYPE_CHECKING":
            continue
        defined_here = getattr(value, "__module__", None) == module.__name__
        if (inspect.isclass(value) or inspect.isfunction(value)) and defined_here:
            names.add(name)
        elif name.isupper() and not inspect.ismodule(value):
            names.add(name)
    return names


@pytest.mark.parametrize("package", [diffusion, self_refine], ids=lambda p: p.__name__)
def test_every_exported_name_resolves_once(package):
    assert len(package.__all__) == len(set(package.__all__))
    assert [name for name in package.__all__ if not hasattr(package, name)] == []


@pytest.mark.parametrize("module_name", FULLY_EXPORTED)
def test_the_sampling_modules_are_exported_whole(module_name):
    module = importlib.import_module(f"xai_train.diffusion.{module_name}")
    missing = sorted(public_names(module) - set(diffusion.__all__))
    assert missing == [], f"xai_train.diffusion does not export {missing} of {module_name}"
    for name in public_names(module):
        assert getattr(diffusion, name) is getattr(module, name)


def test_the_per_pixel_names_of_self_refining_diffusion():
    from xai_train.diffusion.importance_schedule import TimeConstantScale
    from xai_train.diffusion.pipeline import FixedMapDiffusionPipeline
    from xai_train.diffusion.samplers import ExportableSampler, FixedMapSampler

    assert diffusion.FixedMapSampler is FixedMapSampler and diffusion.TimeConstantScale is TimeConstantScale
    assert diffusion.FixedMapDiffusionPipeline is FixedMapDiffusionPipeline
    assert diffusion.ExportableSampler is ExportableSampler
    assert {"resolve_sampler", "SAMPLERS", "fam_noise_scale"} <= set(self_refine.__all__)
    assert self_refine.DIRECTIONS == diffusion.SCALE_DIRECTIONS == ("amplify", "protect")
    star: dict = {}
    exec("from xai_train.diffusion import *", star)  # a star import reaches the lazily loaded pipelines too
    assert set(diffusion.__all__) <= set(star) and star["load_pipeline"] is diffusion.pipeline.load_pipeline
    with pytest.raises(AttributeError, match="has no attribute 'Pipline'"):
        diffusion.Pipline  # noqa: B018


def test_importing_the_package_leaves_the_pipelines_unloaded(process_groups):
    probe = "import sys, xai_train.diffusion as d; print('xai_train.diffusion.pipeline' in sys.modules, "
    probe += "d.FixedMap.__module__, 'xai_train.diffusion.pipeline' in sys.modules)"
    done = process_groups.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "xai_train.diffusion.pipeline", "True"]
