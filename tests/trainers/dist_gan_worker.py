"""Worker for the multi-process tests: trains a tiny BN-free GAN and dumps this rank's weights.

torchrun --standalone --nproc_per_node 2 tests/trainers/dist_gan_worker.py OUT_DIR BATCH STEPS [xai]
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from xai_train.config.gan import GANTrainConfig
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


def main() -> None:
    out, batch, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    callbacks = []
    if len(sys.argv) > 4 and sys.argv[4] == "xai":
        from callbacks import XAIGradientMask

        callbacks.append(XAIGradientMask(method="grad", alpha=0.5))
    torch.manual_seed(0)
    generator, discriminator = build_gan(
        "dcgan", image_size=32, channels=1, g_width=8, d_width=8, g_norm="none", d_norm="none"
    )
    images = torch.rand(128, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GANTrainConfig(batch_size=batch, max_steps=steps, log_every=1, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(generator, discriminator, images, config, callbacks=callbacks, seed=0, cpu=True)
    trainer.train()
    acc = trainer.accelerator
    weights = {f"G.{k}": v for k, v in acc.unwrap_model(trainer.generator).state_dict().items()}
    weights.update({f"D.{k}": v for k, v in acc.unwrap_model(trainer.discriminator).state_dict().items()})
    # Test-only: every rank writes its own file so the test can compare ranks.
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, out / f"rank{acc.process_index}.safetensors")


if __name__ == "__main__":
    main()
