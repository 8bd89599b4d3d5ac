"""A hand-written Accelerate GAN loop with XAIGradientMask and SaliencyLogger (used by the loop tests).

    python tests/callbacks/xai_loop_script.py --out /tmp/xai_loop
    torchrun --standalone --nproc_per_node 2 tests/callbacks/xai_loop_script.py --out /tmp/xai_loop

Each rank draws its own data, so the masks differ between ranks; the generator must stay identical.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from callbacks import SaliencyLogger, XAIGradientMask
from xai_train import CallbackList, TrainState


class RecordingState(TrainState):
    """A TrainState that keeps what it would log (main process only, like the real one)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scalars: list[dict[str, float]] = []
        self.images: list[dict[str, torch.Tensor]] = []

    def log_scalars(self, values, step=None) -> None:
        if self.is_main_process:
            self.scalars.append(dict(values))

    def log_images(self, images, step=None) -> None:
        if self.is_main_process:
            self.images.append(dict(images))


def tiny_gan() -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(nn.Linear(8, 64), nn.Unflatten(1, (1, 8, 8)), nn.Tanh())
    discriminator = nn.Sequential(
        nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 4, 2, 1), nn.BatchNorm2d(8),
        nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(32, 1),
    )  # fmt: skip
    return generator, discriminator


def run_loop(steps: int = 4, method: str = "grad", alpha: float = 0.2, run_dir: Path | None = None) -> dict:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    generator, discriminator = tiny_gan()
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    mask = XAIGradientMask(method, alpha=alpha)  # New Code #
    logger = SaliencyLogger(every_n_steps=2, source=mask)  # New Code #
    callbacks = CallbackList([mask, logger])  # New Code #
    state = RecordingState(accelerator, max_steps=steps, run_dir=run_dir)  # New Code #
    data = torch.Generator().manual_seed(100 + accelerator.process_index)
    for _ in range(steps):
        real = torch.rand(8, 1, 8, 8, generator=data) * 2 - 1
        fake = generator(torch.randn(8, 8, generator=data))
        d_loss = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake.detach())).mean()
        opt_d.zero_grad()
        accelerator.backward(d_loss)
        opt_d.step()

        d_fake = accelerator.unwrap_model(discriminator)(fake)
        callbacks.on_generator_forward(state, fake, d_fake, accelerator.unwrap_model(discriminator))  # New Code #
        opt_g.zero_grad()
        accelerator.backward(F.softplus(-d_fake).mean())
        opt_g.step()
        state.step += 1  # New Code #
        callbacks.on_step_end(state, {})  # New Code #
    callbacks.on_train_end(state)  # New Code #
    params = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(generator).parameters()])
    return {
        "rank": accelerator.process_index,
        "world": accelerator.num_processes,
        "generator": params.tolist(),
        "counters": mask.state_dict(),
        "stats": mask.last_stats,
        "mask_sum": float(mask.last_mask.sum()),
        "logged_scalars": len(state.scalars),
        "logged_images": len(state.images),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="grad")
    args = parser.parse_args()
    result = run_loop(method=args.method, run_dir=args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{result['rank']}.json").write_text(json.dumps(result))
