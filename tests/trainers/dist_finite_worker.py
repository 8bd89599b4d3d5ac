"""Worker for test_finite_distributed.py: failures that only one rank sees must stop every rank alike.

1. Rank 1 alone logs an Inf at step 2 (after checkpoint step_1 was saved): every rank raises the same
   FloatingPointError.
2. Rank 1's RNG-state file is removed from step_1 (and checkpoint.json resealed, so only rank 1 can tell):
   resuming from it raises the same CheckpointError on every rank.

Started as one of two processes with the environment torchrun would give it (RANK, WORLD_SIZE, ...).
Each rank writes the errors it raised to OUT_DIR/rank<r>_<phase>.txt, so the test can compare them.
"""

import json
import sys
from pathlib import Path

import torch

from xai_train.checkpoint import COMPLETE_FILE, CheckpointError
from xai_train.config.gan import GANTrainConfig
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


class InfOnRankOne(GANTrainer):
    def step_scalars(self, stats):
        logs = super().step_scalars(stats)
        if self.accelerator.process_index == 1 and self.state.step == 2:
            logs["d_loss"] = float("inf")  # what a rank-local overflow would look like
        return logs


def trainer(kind: type[GANTrainer], run_dir: Path, resume: str = "") -> GANTrainer:
    torch.manual_seed(0)
    generator, discriminator = build_gan(
        "dcgan", image_size=32, channels=1, g_width=8, d_width=8, g_norm="none", d_norm="none"
    )
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(batch_size=8, max_steps=6, log_every=1, sample_every=0, checkpoint_every=1)
    return kind(generator, discriminator, images, config, run_dir=run_dir, resume=resume, seed=0, cpu=True)


def main() -> None:
    out = Path(sys.argv[1])
    first = trainer(InfOnRankOne, out / "run")
    acc = first.accelerator
    assert acc.num_processes == 2, "start this worker as one of two processes"
    try:
        first.train()
    except FloatingPointError as error:
        (out / f"rank{acc.process_index}_finite.txt").write_text(str(error))  # test-only: every rank writes
    checkpoint = out / "run" / "checkpoints" / "step_1"
    if acc.is_main_process:
        (checkpoint / "random_states_1.pkl").unlink()
        record = json.loads((checkpoint / COMPLETE_FILE).read_text())
        del record["files"]["random_states_1.pkl"]
        (checkpoint / COMPLETE_FILE).write_text(json.dumps(record))
    acc.wait_for_everyone()
    try:
        trainer(GANTrainer, out / "run", resume=str(checkpoint)).train()
    except CheckpointError as error:
        (out / f"rank{acc.process_index}_resume.txt").write_text(str(error))
        raise


if __name__ == "__main__":
    main()
