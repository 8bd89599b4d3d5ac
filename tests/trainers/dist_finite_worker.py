"""Worker for test_finite_distributed.py: rank 1 alone logs an Inf at step 2; every rank must stop alike.

Started as one of two processes with the environment torchrun would give it (RANK, WORLD_SIZE, ...).
The error each rank raised is also written to OUT_DIR/rank<r>.txt, so the test can compare them.
"""

import sys
from pathlib import Path

import torch

from xai_train.config.gan import GANTrainConfig
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


class InfOnRankOne(GANTrainer):
    def step_scalars(self, stats):
        logs = super().step_scalars(stats)
        if self.accelerator.process_index == 1 and self.state.step == 2:
            logs["d_loss"] = float("inf")  # what a rank-local overflow would look like
        return logs


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    generator, discriminator = build_gan(
        "dcgan", image_size=32, channels=1, g_width=8, d_width=8, g_norm="none", d_norm="none"
    )
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(batch_size=8, max_steps=6, log_every=1, sample_every=0, checkpoint_every=0)
    trainer = InfOnRankOne(generator, discriminator, images, config, seed=0, cpu=True)
    assert trainer.accelerator.num_processes == 2, "start this worker as one of two processes"
    try:
        trainer.train()
    except FloatingPointError as error:
        out.mkdir(parents=True, exist_ok=True)  # test-only: every rank writes its own file
        (out / f"rank{trainer.accelerator.process_index}.txt").write_text(str(error))
        raise


if __name__ == "__main__":
    main()
