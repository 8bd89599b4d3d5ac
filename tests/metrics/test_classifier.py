import json

import pytest
import torch

import xai_train.metrics.extractor as extractor_module
from xai_train.data.digits import load_digits_dataset
from xai_train.metrics import (
    ClassifierRecipe,
    default_cache_dir,
    domain_feature_extractor,
    extract_features,
    load_or_train_classifier,
    recipe_key,
)

FAST = ClassifierRecipe(width=16, epochs=4)  # ~1-2 s on one core at 16x16, > 0.9 held-out accuracy


@pytest.fixture(scope="module")
def digits16():
    return load_digits_dataset(image_size=16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(scope="module")
def trained(digits16, cache):
    return load_or_train_classifier("digits", digits16.images, digits16.labels, recipe=FAST, cache_dir=cache)


def fail_training(*args, **kwargs):
    raise AssertionError("train_classifier was called although the cache holds this recipe")


def test_digits_classifier_is_accurate_and_describes_itself(trained):
    assert trained.metadata["accuracy"] > 0.9
    assert trained.metadata["num_holdout"] == 359
    assert trained.num_features == FAST.num_features
    key = recipe_key("digits", 16, 1, FAST)
    assert trained.name == f"digits-16-cnn-{key[:6]}"


def test_cache_is_safetensors_and_json(trained, cache):
    key = recipe_key("digits", 16, 1, FAST)
    weights, meta = cache / f"digits-16px-1c-{key}.safetensors", cache / f"digits-16px-1c-{key}.json"
    assert weights.is_file() and meta.is_file()
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("digits-16px")) == [
        meta.name,
        weights.name,
    ]
    metadata = json.loads(meta.read_text())
    assert metadata["recipe"]["epochs"] == FAST.epochs and metadata["key"] == key
    assert metadata["accuracy"] == trained.metadata["accuracy"]


def test_second_call_loads_without_training(trained, digits16, cache, monkeypatch):
    monkeypatch.setattr(extractor_module, "train_classifier", fail_training)
    loaded = load_or_train_classifier("digits", digits16.images, digits16.labels, recipe=FAST, cache_dir=cache)
    assert loaded.name == trained.name
    images = digits16.images[:50]
    torch.testing.assert_close(extract_features(loaded, images), extract_features(trained, images))


def test_domain_extractor_hits_the_cache_without_building_the_dataset(trained, cache, monkeypatch):
    monkeypatch.setattr(extractor_module, "train_classifier", fail_training)
    loaded = domain_feature_extractor("digits", image_size=16, channels=1, recipe=FAST, cache_dir=cache)
    assert loaded.name == trained.name


def test_changed_recipe_trains_a_new_classifier(trained, digits16, cache, monkeypatch):
    calls = []
    real_train = extractor_module.train_classifier

    def spy(*args, **kwargs):
        calls.append(args[2])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(extractor_module, "train_classifier", spy)
    changed = ClassifierRecipe(width=4, num_features=8, epochs=1)
    other = load_or_train_classifier(
        "digits", digits16.images[:200], digits16.labels[:200], recipe=changed, cache_dir=cache
    )
    assert calls == [changed]
    assert other.name != trained.name and other.num_features == 8
    bumped = ClassifierRecipe(width=4, num_features=8, epochs=1, version="cnn-v2")
    load_or_train_classifier("digits", digits16.images[:200], digits16.labels[:200], recipe=bumped, cache_dir=cache)
    assert calls == [changed, bumped]


def test_features_are_penultimate_and_shape_checked(trained, digits16):
    images = digits16.images[:8]
    features = extract_features(trained, images)
    assert features.shape == (8, FAST.num_features) and (features >= 0).all()  # post-ReLU hidden layer
    torch.testing.assert_close(trained.classifier.head(features), trained.classifier(images))
    with pytest.raises(ValueError, match="expects images \\(B, 1, 16, 16\\)"):
        trained(torch.zeros(2, 1, 32, 32))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XAI_TRAIN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "classifiers"
    monkeypatch.delenv("XAI_TRAIN_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "xai_train", "classifiers")
