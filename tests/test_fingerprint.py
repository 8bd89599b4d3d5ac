"""Environment fingerprints: what they record, which differences count, and that a trainer writes them,
including the fingerprints of the processes a run resumed from."""

import json

import pytest
import torch
from accelerate import Accelerator

from xai_train.ablation.report import check_environments
from xai_train.ablation.results import CellResult
from xai_train.config.gan import GANTrainConfig
from xai_train.errors import UserError
from xai_train.fingerprint import (
    NUMERIC_FIELDS,
    cpu_capability,
    cpu_model,
    describe_differences,
    environment_fingerprint,
    numeric_differences,
)
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


def test_the_fingerprint_records_what_changes_numbers():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fingerprint = environment_fingerprint(Accelerator(cpu=True, mixed_precision="bf16"), seed=7, extractor="x")
    finally:
        torch.set_num_threads(before)
    assert set(NUMERIC_FIELDS) <= set(fingerprint)
    assert fingerprint["torch"] == torch.__version__ and fingerprint["torch_threads"] == 1
    assert (fingerprint["device"], fingerprint["gpu"], fingerprint["mixed_precision"]) == ("cpu", None, "bf16")
    assert (fingerprint["seed"], fingerprint["extractor"], fingerprint["processes"]) == (7, "x", 1)
    assert (fingerprint["cpu"], fingerprint["cpu_capability"]) == (cpu_model(), cpu_capability())
    json.dumps(fingerprint)  # JSON-ready


def test_differences_count_numeric_fields_only_and_survive_missing_ones():
    base = environment_fingerprint(seed=0)
    same = {"a": base, "b": {**base, "seed": 1, "xai_train_commit": "other", "python": "3.99"}}
    assert numeric_differences(same) == {}
    odd = {"a": base, "b": {**base, "torch_threads": 4}, "c": {k: v for k, v in base.items() if k != "torch_threads"}}
    assert numeric_differences(odd) == {"torch_threads": {"a": base["torch_threads"], "b": 4}}
    assert list(numeric_differences({"a": base, "b": None})) == ["fingerprint"]
    assert numeric_differences({"a": {}, "b": {"cpu": "x"}, "c": {"cpu": "y"}}) == {"cpu": {"b": "x", "c": "y"}}
    assert describe_differences({"cpu": {"b": "x", "c": "y"}}) == ["cpu: x (b); y (c)"]


def tiny_trainer(run_dir, max_steps, resume="", threads=None):
    torch.manual_seed(0)
    G, D = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    images = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(batch_size=16, max_steps=max_steps, log_every=1, sample_every=0, checkpoint_every=2)
    return GANTrainer(G, D, images, config, run_dir=run_dir, resume=resume, cpu=True, seed=3)


def test_summary_carries_the_fingerprints_of_every_process_that_trained_the_run(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        tiny_trainer(tmp_path / "run", 2).train()
        torch.set_num_threads(2)  # resumed "elsewhere": with another thread count
        tiny_trainer(tmp_path / "run", 4, resume="auto").train()
    finally:
        torch.set_num_threads(before)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["fingerprint"]["seed"] == 3 and summary["fingerprint"]["torch_threads"] == 2
    assert [fp["torch_threads"] for fp in summary["earlier_fingerprints"]] == [1]
    cell = CellResult("arm", 0, True, summary)
    with pytest.raises(UserError, match=r"torch_threads: 2 \(arm/seed_0\); 1 \(arm/seed_0 \(before resume 1\)\)"):
        check_environments([cell], allow_mixed=False, name="demo")
    assert any("mixed environments" in line for line in check_environments([cell], allow_mixed=True, name="demo"))
