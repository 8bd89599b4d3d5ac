import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import xai_train.metrics.extractor as extractor_module
from xai_train.data.digits import load_digits_dataset
from xai_train.fingerprint import cpu_capability, cpu_model
from xai_train.metrics import (
    ClassifierRecipe,
    default_cache_dir,
    domain_feature_extractor,
    extract_features,
    load_or_train_classifier,
    recipe_key,
    train_classifier,
)
from xai_train.metrics.extractor import ExtractorError, shipped_paths, weights_sha256

SHIPPED = {"digits": "digits-32-cnn-9719e4c7", "shapes": "shapes-32-cnn-7c42dbaf"}
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
    sha256 = weights_sha256(trained.classifier.state_dict())
    assert trained.name == f"digits-16-cnn-{sha256[:8]}" and trained.metadata["sha256"] == sha256


def test_cache_is_safetensors_and_json(trained, cache):
    key = recipe_key("digits", 16, 1, FAST)
    weights, meta = cache / f"digits-16px-1c-{key}.safetensors", cache / f"digits-16px-1c-{key}.json"
    assert weights.is_file() and meta.is_file()
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("digits-16px")) == [
        meta.name,
        weights.name,
    ]
    metadata = json.loads(meta.read_text())
    assert metadata["recipe"]["epochs"] == FAST.epochs and metadata["recipe_key"] == key
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
    bumped = ClassifierRecipe(width=4, num_features=8, epochs=1, version="cnn-v3")
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


def test_training_gives_the_same_weights_with_one_and_two_threads(digits16):
    recipe = ClassifierRecipe(width=4, num_features=8, epochs=1, max_steps=20)
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model, _ = train_classifier(digits16.images[:400], digits16.labels[:400], recipe)
            weights.append(weights_sha256(model.state_dict()))
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert weights[0] == weights[1]


def test_a_changed_cached_extractor_is_refused(digits16, tmp_path):
    recipe = ClassifierRecipe(width=4, num_features=8, epochs=1, max_steps=5)
    extractor = load_or_train_classifier("digits", digits16.images, digits16.labels, recipe=recipe, cache_dir=tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    state = load_file(weights)
    state["head.bias"] = state["head.bias"] + 1e-3
    save_file(state, str(weights))
    with pytest.raises(ExtractorError, match=f"hash to .*but its metadata says '{extractor.name}'.*delete"):
        load_or_train_classifier("digits", digits16.images, digits16.labels, recipe=recipe, cache_dir=tmp_path)
    weights.write_bytes(b"truncated")
    with pytest.raises(ExtractorError, match="cannot be read"):
        load_or_train_classifier("digits", digits16.images, digits16.labels, recipe=recipe, cache_dir=tmp_path)


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_shipped_extractors_hash_to_their_names_and_are_used_without_training(dataset, monkeypatch, tmp_path):
    monkeypatch.setattr(extractor_module, "train_classifier", fail_training)
    monkeypatch.setenv("XAI_TRAIN_CACHE", str(tmp_path))  # an empty cache: the package's files must serve
    extractor = domain_feature_extractor(dataset)
    assert extractor.name == SHIPPED[dataset]  # the names docs/results quote: re-shipping must be deliberate
    sha256 = weights_sha256(extractor.classifier.state_dict())
    assert extractor.name == f"{dataset}-32-cnn-{sha256[:8]}" == extractor.metadata["name"]
    assert extractor.metadata["recipe"] == dataclasses.asdict(ClassifierRecipe())
    assert extractor.metadata["accuracy"] > 0.98
    assert not any(tmp_path.rglob("*.safetensors"))


def test_retraining_the_shipped_digits_extractor_gives_its_bits():
    metadata = json.loads(shipped_paths("digits", 32, 1)[1].read_text())
    made, here = (metadata["cpu"], metadata["cpu_capability"]), (cpu_model(), cpu_capability())
    if made != here:  # rounding may differ on another CPU: the shipped file is the reference
        pytest.skip(f"shipped weights were made on {made}, this is {here}")
    data = load_digits_dataset(image_size=32)
    model, _ = train_classifier(data.images, data.labels, ClassifierRecipe())
    assert weights_sha256(model.state_dict()) == metadata["sha256"]


def test_a_damaged_shipped_extractor_is_refused_without_falling_back_to_training(monkeypatch, tmp_path):
    weights, metadata = shipped_paths("digits", 32, 1)
    (tmp_path / weights.name).write_bytes(weights.read_bytes()[:1000])
    (tmp_path / metadata.name).write_text(metadata.read_text())
    monkeypatch.setattr(extractor_module, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(extractor_module, "train_classifier", fail_training)
    with pytest.raises(ExtractorError, match="cannot be read.*reinstall xai-train"):
        domain_feature_extractor("digits")
    (tmp_path / metadata.name).write_text("[]")
    with pytest.raises(ExtractorError, match="cannot be read.*TypeError"):  # not a traceback
        domain_feature_extractor("digits")
