"""Worker for the two-process SRD test: a few steps with FAM refreshes; each rank dumps its FAM and weights.

torchrun --standalone --nproc_per_node 2 tests/diffusion/srd_dist_worker.py OUT_DIR [online]
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from callbacks import SelfRefiningDiffusion
from xai_train.config.diffusion import DiffusionTrainConfig
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.trainers.diffusion import DiffusionTrainer


def main() -> None:
    out = Path(sys.argv[1])
    training = sys.argv[2] if len(sys.argv) > 2 else "offline"
    images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    unet = build_unet(16, 1, (16, 32))
    box: list = []
    callback = SelfRefiningDiffusion(
        lambda n, steps, generator: box[0].sample(n, steps, generator),
        images,
        first_process=1,
        fam_cycle=2,
        num_samples=3,
        sample_steps=2,
        highlighter_samples=8,
        highlighter_epochs=1,
        highlighter_batch_size=4,
        highlighter_width=4,
        highlighter_training=training,
        buffer_capacity=16,
        noise_weight=0.2,
        attention_weight=0.5,
    )
    config = DiffusionTrainConfig(
        batch_size=4,
        max_steps=4,
        lr_warmup_steps=0,
        log_every=1,
        sample_every=0,
        checkpoint_every=0,
        num_samples=4,
        sample_steps=2,
    )
    trainer = DiffusionTrainer(unet, build_noise_scheduler(100), images, config, callbacks=[callback], cpu=True)
    box.append(trainer)
    trainer.train()
    acc = trainer.accelerator
    tensors = {"fam": callback.fam, "refreshes": torch.tensor(callback.refreshes)}
    tensors.update({f"unet.{k}": v for k, v in acc.unwrap_model(trainer.unet).state_dict().items()})
    tensors.update({f"proj.{k}": v for k, v in callback.attention.projections.state_dict().items()})
    tensors.update({f"fh.{k}": v for k, v in callback.highlighter.state_dict().items()})
    # Test-only: every rank writes its own file so the test can compare ranks.
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"rank{acc.process_index}.safetensors")


if __name__ == "__main__":
    main()
