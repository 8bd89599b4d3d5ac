"""Known answers for artifact-unit correction: a planted blob unit is found, and suppressing it removes the
blob without moving unflagged samples, while the random-unit control does neither."""

import pytest
import torch
import torch.nn.functional as F

from xai_train.generator.bake import bake_unit_scale
from xai_train.generator.correct import k_sweep, rank_units, sequential_correction, summarise_sweep
from xai_train.generator.scorers import (
    MaskScorer,
    RareUnitScorer,
    cam_scorer,
    load_artifact_classifier,
    save_artifact_classifier,
    train_artifact_classifier,
)
from xai_train.generator.units import generate

LAYER = "upsample.0.act"


def blob_brightness(images, blob):
    return images.mean(dim=1)[:, blob[0, 0]].mean(dim=1)  # (N,) mean of the blob region


@pytest.fixture(scope="module")
def latents():
    return torch.randn(500, 100, generator=torch.Generator().manual_seed(2))


def oracle_scorer(planted):
    blob = planted.blob
    return MaskScorer(lambda x: blob_brightness(x, blob), lambda x: blob.expand(len(x), 1, *blob.shape[-2:]))


def test_oracle_masks_rank_the_planted_unit_first_and_suppression_removes_only_the_blob(planted, latents):
    G, unit = planted.generator, planted.units[LAYER]
    shows = planted.shows_blob(latents, margin=0.3)
    silent = ~planted.shows_blob(latents)
    ranking = rank_units(G, LAYER, latents, oracle_scorer(planted), flagged=shows)
    assert ranking.order[0] == unit and ranking.scores[unit] > 2 * ranking.scores[ranking.order[1]]
    before, _ = generate(G, latents)
    after, _ = generate(G, latents, edits={LAYER: ranking.scale(1)})
    assert blob_brightness(before[shows], planted.blob).min() > 0.9  # white squares
    assert blob_brightness(after[shows], planted.blob).max() < 0.5  # gone
    assert torch.equal(after[silent], before[silent])  # tolerance 0: the chain is silent there
    control_unit = 3
    control, _ = generate(G, latents, edits={LAYER: torch.ones(16).index_fill(0, torch.tensor([control_unit]), 0)})
    assert blob_brightness(control[shows], planted.blob).min() > 0.9  # the random unit leaves the blob
    assert (control[silent] - before[silent]).abs().mean() > 1e-3  # ... and moves normal samples
    # baked into the weights: the same images
    assert torch.equal(generate(bake_unit_scale(G, LAYER, ranking.scale(1)), latents)[0], after)


def test_a_classifier_trained_on_labelled_generations_finds_the_unit(planted, latents, tmp_path):
    G = planted.generator
    train_z = torch.randn(800, 100, generator=torch.Generator().manual_seed(3))
    images, _ = generate(G, train_z)
    model, accuracy = train_artifact_classifier(images, planted.shows_blob(train_z, margin=0.1), width=8, steps=100)
    assert accuracy > 0.9
    path = save_artifact_classifier(model, tmp_path / "scorer", accuracy=accuracy)
    model = load_artifact_classifier(path)
    ranking = rank_units(G, LAYER, latents, cam_scorer(model), flag_fraction=0.15)
    assert planted.shows_blob(latents)[ranking.flagged].float().mean() > 0.9  # it flags blob samples
    assert ranking.order[0] == planted.units[LAYER]


def test_scorer_checkpoint_that_does_not_load(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "bad.json").write_text('{"channels": 1, "width": 8}')
    with pytest.raises(ValueError, match="does not load as an ArtifactClassifier"):
        load_artifact_classifier(tmp_path / "bad")
    with pytest.raises(ValueError, match="not found"):
        load_artifact_classifier(tmp_path / "missing")


def test_rare_unit_scorer_flags_blob_samples(planted, latents):
    ranking = rank_units(planted.generator, "project.act", latents, RareUnitScorer(), flag_fraction=0.2)
    assert ranking.order[0] == planted.units["project.act"]  # fires on 20% only


def test_sequential_correction_and_k_sweep_beat_the_random_control(planted, latents):
    G = planted.generator
    scorer = oracle_scorer(planted)
    corrections, rankings = sequential_correction(G, ["project.act", LAYER], latents, scorer, k=1, flag_fraction=0.2)
    assert rankings[0].order[0] == planted.units["project.act"]
    assert corrections["project.act"][planted.units["project.act"]] == 0

    def features(images):
        return F.avg_pool2d(images, 4).flatten(1)  # a transparent feature space: 8×8 block means

    clean = {"project.act": torch.ones(32).index_fill(0, torch.tensor([planted.units["project.act"]]), 0)}
    real, _ = generate(G, torch.randn(600, 100, generator=torch.Generator().manual_seed(4)), edits=clean)
    ranking = rank_units(G, LAYER, latents, scorer, flag_fraction=0.2)
    rows = summarise_sweep(k_sweep(G, ranking, latents, features(real), features, ks=(1, 2), random_seeds=(0, 1)))
    by = {(row["k"], row["arm"]): row for row in rows}
    assert by[(1, "top")]["fd_flagged"] < 0.5 * by[(0, "none")]["fd_flagged"]
    assert by[(1, "top")]["fd_flagged"] < 0.5 * by[(1, "random")]["fd_flagged"]
    assert by[(1, "top")]["unflagged_change"] < 0.25 * by[(1, "random")]["unflagged_change"]


def test_k_outside_1_to_K_and_bad_unit_indices_are_one_line_user_errors(planted, latents):
    from xai_train.errors import UserError
    from xai_train.generator.correct import random_units, suppression_scale
    from xai_train.generator.units import UnitEdit

    G = planted.generator
    ranking = rank_units(G, LAYER, latents[:40], RareUnitScorer())  # upsample.0.act: 16 units
    assert len(ranking.scores) == 16
    assert int((ranking.scale(16) == 0).sum()) == 16  # k = K is legal: the whole layer, asked for
    for k in (17, 100, 0, -1, 2.0, True):
        message = r"^k must be a unit count in 1\.\.16 for layer 'upsample\.0\.act'"
        with pytest.raises(UserError, match=message) as caught:
            ranking.scale(k)
        assert "\n" not in str(caught.value) and str(caught.value).endswith(f"got {k!r}")
    calls = []

    def features(images):
        calls.append(len(images))
        return images.mean(dim=(2, 3))

    with pytest.raises(UserError, match=r"1\.\.16 for layer 'upsample\.0\.act' \(16 units\), got 25"):
        k_sweep(G, ranking, latents[:40], torch.randn(20, 1), features, ks=(1, 25), random_seeds=(0,))
    assert calls == []  # refused before any arm was generated or measured
    with pytest.raises(UserError, match=r"got 25"):
        sequential_correction(G, [LAYER], latents[:40], RareUnitScorer(), k=25)
    with pytest.raises(UserError, match=r"got 17"):
        random_units(16, 17, seed=0)
    for units in ([16], [-1], [3, 3]):
        with pytest.raises(UserError, match=r"unit indices must"):
            suppression_scale(16, units)
    with pytest.raises(UserError, match=r"unit indices must lie in 0\.\.15 \(a layer of 16 units\), got \[-1\]"):
        UnitEdit.suppress([-1], 16)
