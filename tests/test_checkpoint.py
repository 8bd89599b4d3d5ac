import pytest
import torch
from accelerate import Accelerator

from xai_train.checkpoint import TRAINER_STATE_FILE, CheckpointError, CheckpointManager


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
    assert not list(manager.directory.glob(".tmp*"))
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


def test_checkpoint_files_load_with_weights_only(setup):
    _, _, manager = setup
    path = manager.save(1, {"step": 1})
    for file in path.iterdir():
        if file.suffix in (".pt", ".bin"):
            torch.load(file, weights_only=True)


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
