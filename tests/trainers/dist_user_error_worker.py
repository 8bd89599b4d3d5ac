"""Worker for test_devices.py: a user error that only rank 1 raises must stop both ranks with one message.

Rank 1's explainer is handed NaN fakes at step 1 (what an fp16 overflow on that rank's batch gives):
``attribute`` refuses them with a UserError there only. Each rank writes the error it raised to
OUT_DIR/rank<r>_user_error.txt. Started as one of two processes with torchrun's environment (RANK, ...).
"""

import sys
from pathlib import Path

import torch

from callbacks import XAIGradientMask
from xai_train.config.gan import GANTrainConfig
from xai_train.errors import UserError
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


class NaNFakesOnRankOne(XAIGradientMask):
    def on_generator_forward(self, state, fake, d_fake, discriminator):
        if state.accelerator.process_index == 1 and state.step == 1:
            fake = torch.full_like(fake.detach(), float("nan"))
        return super().on_generator_forward(state, fake, d_fake, discriminator)


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    generator, discriminator = build_gan(
        "dcgan", image_size=32, channels=1, g_width=8, d_width=8, g_norm="none", d_norm="none"
    )
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(batch_size=8, max_steps=4, log_every=1, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(
        generator, discriminator, images, config, callbacks=[NaNFakesOnRankOne("saliency")], seed=0, cpu=True
    )
    assert trainer.accelerator.num_processes == 2, "start this worker as one of two processes"
    try:
        trainer.train()
    except UserError as error:
        (out / f"rank{trainer.accelerator.process_index}_user_error.txt").write_text(str(error))  # test-only
        raise


if __name__ == "__main__":
    main()
