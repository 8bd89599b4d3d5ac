"""A hand-written Accelerate GAN loop that adds xAI-GAN with four lines (marked ``# New Code #``).

    python recipes/custom_loop.py --steps 200
    accelerate launch --multi_gpu --num_processes 2 recipes/custom_loop.py --steps 200
    torchrun --nproc_per_node 2 recipes/custom_loop.py --steps 200

Delete the marked lines and you have the plain loop you started from; ``tests/test_custom_loop.py`` checks
that both versions run.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from callbacks import XAIGradientMask
from xai_train import CallbackList, TrainState
from xai_train.cli import run_main
from xai_train.data import TensorBatches, build_dataset
from xai_train.errors import UserError
from xai_train.models import build_gan


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="DCGAN base width of G and D")
    args = parser.parse_args(argv)
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--width", args.width)):
        if value < 1:
            raise UserError(f"{flag}={value}: must be >= 1")

    accelerator = Accelerator()
    torch.manual_seed(0)
    images = build_dataset("digits", image_size=32).images
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=args.width, d_width=args.width)
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    batches = TensorBatches(
        images,
        args.batch_size,
        seed=0,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
    )
    callbacks = CallbackList([XAIGradientMask(method="grad", alpha=0.2)])  # New Code #
    state = TrainState(accelerator, max_steps=args.steps)  # New Code #

    for step in range(args.steps):
        real = batches.next()
        latents = torch.randn(args.batch_size, 100, device=accelerator.device)
        fake = generator(latents)

        d_real, d_fake = discriminator(real), discriminator(fake.detach())
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad()
        accelerator.backward(d_loss)
        opt_d.step()

        critic = accelerator.unwrap_model(discriminator)  # no DDP sync: only G's gradient is wanted here
        d_fake = critic(fake)
        callbacks.on_generator_forward(state, fake, d_fake, critic)  # New Code #
        g_loss = F.softplus(-d_fake).mean()
        opt_g.zero_grad()
        accelerator.backward(g_loss)
        opt_g.step()
        state.step = step + 1  # New Code #
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


if __name__ == "__main__":
    run_main(lambda argv: print(main(argv)))  # a user error: one "error: ..." line, exit code 2 (--debug: traceback)
