import importlib.util
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState, PartialState
from diffusers import UNet2DModel

REPO = Path(__file__).resolve().parents[1]


def load_recipe_module(name: str) -> ModuleType:
    """``recipes/<name>.py`` as a fresh module (its ``main`` callable in-process)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_recipe() -> Callable[[str], ModuleType]:
    """``load_recipe("train_diffusion")``: a recipe script as a module."""
    return load_recipe_module


def tiny_unet(
    channels: int = 1, size: int = 8, seed: int = 0, widths: tuple[int, int] = (16, 32), groups: int = 8
) -> UNet2DModel:
    """A seeded UNet2DModel small enough for unit tests (a few milliseconds per forward on a CPU)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        layers_per_block=1,
        norm_num_groups=groups,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


@pytest.fixture
def make_unet() -> Callable[..., UNet2DModel]:
    """The ``tiny_unet`` factory, for tests that need several or other sizes."""
    return tiny_unet


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test builds its own Accelerator (mixed precision, accumulation) from a clean slate."""
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILLs every process still in ``process``'s group (its session: it was started in a new one)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has exited already
        pass


class ProcessGroups:
    """Starts test subprocesses each in a new session, so a timeout or a failure kills the whole tree.

    ``torchrun``/``accelerate launch`` start worker processes; ``subprocess.run(timeout=...)`` kills only
    the launcher and leaves the workers running as orphans. Here every command leads its own process group,
    which is SIGKILLed on a timeout, on any error, when the command ends (leftover children) and at teardown.
    """

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(command, start_new_session=True, **popen_kwargs)``, killed at teardown at the latest."""
        process = subprocess.Popen(command, start_new_session=True, **popen_kwargs)
        self.started.append(process)
        return process

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float,
        check: bool = False,
        capture_output: bool = False,
        input: str | bytes | None = None,
        **popen_kwargs: Any,
    ) -> subprocess.CompletedProcess:
        """Like ``subprocess.run`` (same arguments), but the timeout kills the command's whole process group."""
        if capture_output:
            popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if input is not None:
            popen_kwargs["stdin"] = subprocess.PIPE
        process = self.start(command, **popen_kwargs)
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_process_group(process)
            stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(process.args, timeout, stdout, stderr) from None
        finally:
            kill_process_group(process)  # workers the command left behind, or all of them on an error
            process.wait()
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check:
            done.check_returncode()
        return done

    def close(self) -> None:
        for process in self.started:
            kill_process_group(process)
            process.wait()


@pytest.fixture
def process_groups() -> Iterator[ProcessGroups]:
    """Runs subprocesses in their own process groups and kills what is left of them when the test ends."""
    groups = ProcessGroups()
    yield groups
    groups.close()
