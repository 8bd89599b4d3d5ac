import json
import random
import shutil

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from xai_train.callback import CallbackList
from xai_train.checkpoint import (
    COMPLETE_FILE,
    TRAINER_STATE_FILE,
    CheckpointError,
    CheckpointManager,
    list_checkpoints,
)
from xai_train.errors import UserError
from xai_train.models import build_gan


@pytest.fixture
def setup(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    return accelerator, model, CheckpointManager(accelerator, tmp_path / "checkpoints", keep_last=2)


def test_save_keeps_last_k_and_loads(setup):
    accelerator, model, manager = setup
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        manager.save(step, {"step": step, "rng": torch.arange(3)})
    names = [p.name for p in manager.checkpoints()]
    assert names == ["step_2", "step_3"]
    assert sorted(p.name for p in manager.directory.iterdir()) == ["step_2", "step_3"]  # no hidden leftovers
    assert (manager.latest() / "model.safetensors").is_file()
    with torch.no_grad():
        model.weight.zero_()
    state = manager.load(manager.resolve("auto"))
    assert state["step"] == 3 and torch.equal(state["rng"], torch.arange(3))
    assert torch.all(model.weight == 3)


def test_resaving_a_step_replaces_it(setup):
    _, model, manager = setup
    manager.save(5, {"step": 5, "tag": 1})
    manager.save(5, {"step": 5, "tag": 2})
    assert [p.name for p in manager.checkpoints()] == ["step_5"]
    assert torch.load(manager.latest() / TRAINER_STATE_FILE, weights_only=True)["tag"] == 2


def test_leftover_temporary_folder_is_ignored(setup):
    _, _, manager = setup
    (manager.directory / ".tmp_step_9").mkdir(parents=True)
    assert manager.latest() is None
    assert manager.resolve("auto") is None
    assert manager.resolve("") is None


def test_bad_resume_paths(setup, tmp_path):
    _, _, manager = setup
    with pytest.raises(CheckpointError, match="does not exist"):
        manager.resolve(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        manager.resolve(tmp_path / "empty")


NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def test_checkpoint_files_load_with_weights_only(setup):
    _, _, manager = setup
    path = manager.save(1, {"step": 1})
    checked = []
    for file in sorted(path.iterdir()):
        if file.suffix == ".safetensors":
            assert load_file(file)
        elif file.suffix == ".json":
            assert json.loads(file.read_text())["step"] == 1
        else:
            # Numpy's RNG state needs its array reconstructor allowed; nothing that could run code is.
            with torch.serialization.safe_globals(NUMPY_GLOBALS):
                assert torch.load(file, weights_only=True) is not None
        checked.append(file.name)
    expected = {COMPLETE_FILE, "model.safetensors", "random_states_0.pkl", TRAINER_STATE_FILE}
    assert expected <= set(checked), checked
    assert checked == sorted(p.name for p in path.iterdir())


def test_named_checkpoints_are_kept_apart(setup):
    _, _, manager = setup
    manager.save(1, {"step": 1})
    manager.save(1, {"step": 1}, name="best")
    for step in (2, 3, 4):
        manager.save(step, {"step": step})
    assert [p.name for p in manager.checkpoints()] == ["step_3", "step_4"]
    assert (manager.directory / "best" / "trainer_state.pt").is_file()
    assert manager.resolve("auto").name == "step_4"
    with pytest.raises(ValueError, match="looks like a step folder"):
        manager.save(5, {"step": 5}, name="step_9")


# --- crash leftovers -----------------------------------------------------------------------------------


def test_folders_without_the_marker_are_never_listed(setup):
    _, _, manager = setup
    manager.save(1, {"step": 1})
    manager.save(2, {"step": 2})
    (manager.directory / "step_1" / COMPLETE_FILE).unlink()  # e.g. half-deleted by an old-style prune
    assert [p.name for p in manager.checkpoints()] == ["step_2"]
    assert [p.name for p in list_checkpoints(manager.directory)] == ["step_2"]


def test_clean_leftovers_restores_a_parked_checkpoint_and_removes_the_rest(setup):
    _, _, manager = setup
    manager.save(1, {"step": 1}, name="best")
    manager.save(2, {"step": 2})
    manager.save(3, {"step": 3})
    directory = manager.directory
    # A kill between the two renames of a re-save leaves `best` parked as `.old_best`.
    (directory / "best").rename(directory / ".old_best")
    # A kill inside a prune's rmtree leaves a half-deleted hidden folder; inside a save, a .tmp_ folder.
    (directory / "step_2").rename(directory / ".pruning_step_2")
    (directory / ".pruning_step_2" / "model.safetensors").unlink()
    shutil.copytree(directory / "step_3", directory / ".tmp_step_4")
    assert [p.name for p in manager.checkpoints()] == ["step_3"]
    handled = manager.clean_leftovers()
    assert handled == [".old_best", ".pruning_step_2", ".tmp_step_4"]
    assert sorted(p.name for p in directory.iterdir()) == ["best", "step_3"]
    assert manager.load(directory / "best")["step"] == 1


def test_auto_refuses_a_newer_step_folder_without_marker(setup):
    _, _, manager = setup
    manager.save(1, {"step": 1})
    manager.save(2, {"step": 2})
    (manager.directory / "step_2" / COMPLETE_FILE).unlink()  # as written by a version without the marker
    with pytest.raises(CheckpointError, match=r"step_2' has no checkpoint.json .* resume=.*step_2"):
        manager.resolve("auto")
    legacy = manager.resolve(manager.directory / "step_2")  # an explicit path still loads, file by file
    assert manager.load(legacy)["step"] == 2


# --- load failures: one CheckpointError naming folder, file and cause ------------------------------------


def gan_manager(directory, arch="dcgan", width=8):
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    G, D = build_gan(arch, image_size=32, channels=1, g_width=width, d_width=width)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    CallbackList([]).register_for_checkpointing(accelerator)  # the trainers' callbacks.pt
    return CheckpointManager(accelerator, directory), G


@pytest.fixture
def saved(tmp_path):
    manager, _ = gan_manager(tmp_path / "checkpoints")
    return manager.save(3, {"step": 3, "data_position": torch.tensor([7])})


def reseal(folder):
    """Rewrites checkpoint.json for the current files (a tampered checkpoint with a consistent marker)."""
    record = json.loads((folder / COMPLETE_FILE).read_text())
    record["files"] = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != COMPLETE_FILE}
    (folder / COMPLETE_FILE).write_text(json.dumps(record))


def load_error(folder, **model) -> str:
    manager, _ = gan_manager(folder.parent, **model)
    with pytest.raises(CheckpointError) as caught:
        manager.load(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    assert "pytorch_model.bin" not in message
    return message


def test_checkpoint_error_is_a_user_error():
    assert issubclass(CheckpointError, UserError)


def test_wrong_architecture(saved):
    message = load_error(saved, arch="paper_mlp")
    assert "checkpoint has DCGANGenerator weights in model.safetensors, this run builds PaperMLPGenerator" in message
    assert "config.yaml" in message


def test_width_mismatch_fails_before_any_weight_changes(saved):
    manager, G = gan_manager(saved.parent, width=16)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: '.*' is \(.*\) in the checkpoint but .* DCGANGenerator"
    ):
        manager.load(saved)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


@pytest.mark.parametrize("sealed", [True, False], ids=["with_marker", "legacy_without_marker"])
@pytest.mark.parametrize("name", ["model.safetensors", "model_1.safetensors", TRAINER_STATE_FILE, "optimizer.bin"])
def test_truncated_file(saved, name, sealed):
    data = (saved / name).read_bytes()
    (saved / name).write_bytes(data[: len(data) // 2])
    if not sealed:
        (saved / COMPLETE_FILE).unlink()
    message = load_error(saved)
    assert name in message and ("truncated" in message or "corrupt" in message)


@pytest.mark.parametrize("sealed", [True, False], ids=["with_marker", "legacy_without_marker"])
def test_missing_model_file(saved, sealed):
    (saved / "model.safetensors").unlink()
    if not sealed:
        (saved / COMPLETE_FILE).unlink()
    assert "model.safetensors" in load_error(saved) and "missing" in load_error(saved)


class Payload:
    """Unpickling this would create a file; a safe loader must refuse it without running it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (shutil.copyfile, (__file__, str(self.target)))


@pytest.mark.parametrize("name", [TRAINER_STATE_FILE, "optimizer.bin", "random_states_0.pkl", "callbacks.pt"])
def test_refused_pickles_never_run(saved, tmp_path, name):
    target = tmp_path / "payload_ran"
    torch.save({"step": 3, "evil": Payload(target)}, saved / name)
    reseal(saved)
    message = load_error(saved)
    assert name in message and "refused" in message
    assert not target.exists()


def test_rng_states_are_restored_even_when_accelerate_fails_to(saved, monkeypatch):
    manager, _ = gan_manager(saved.parent)
    manager.save(4, {"step": 4})
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    import accelerate.checkpointing

    real_load = accelerate.checkpointing.load

    def load_except_rng(path, *args, **kwargs):  # Accelerate only logs this failure at INFO level
        if str(path).endswith(".pkl"):
            raise OSError("simulated read failure")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(accelerate.checkpointing, "load", load_except_rng)
    manager.load(manager.latest())
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


@pytest.mark.parametrize("damage", ["missing", "not_rng"])
def test_unusable_rng_states(saved, damage):
    rng_file = saved / "random_states_0.pkl"
    if damage == "missing":
        rng_file.unlink()
    else:
        torch.save({"step": 3}, rng_file)
    reseal(saved)
    message = load_error(saved)
    assert "random_states_0.pkl" in message and ("missing" in message or "RNG states" in message)
