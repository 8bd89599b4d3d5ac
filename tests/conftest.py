import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from accelerate.state import AcceleratorState, GradientState, PartialState


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
