"""Each rank trains on its own slice of one global latent draw (the "rank slicing" of the GAN trainer).

``GANTrainer._latents`` draws (grad_accum_steps, num_processes, B, latent_dim) from one seeded generator that
every rank shares, and keeps column ``process_index``. Known answer without starting processes: the method on
a stand-in trainer for each rank of a 3-process run gives exactly the columns of the global draw, all different.
The mutation check (scripts/mutation_check.py) plants ``everyone[:, 0]`` there: every rank then trains on rank
0's latents, which no multi-process test noticed (the ranks' weights stay equal either way).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from xai_train.trainers.gan import GANTrainer

MICRO, RANKS, BATCH, LATENT = 2, 3, 4, 5


def rank_latents(rank: int, seed: int = 7) -> torch.Tensor:
    stand_in = SimpleNamespace(
        accelerator=SimpleNamespace(num_processes=RANKS, process_index=rank, device=torch.device("cpu")),
        config=SimpleNamespace(batch_size=BATCH, grad_accum_steps=MICRO),
        latent_dim=LATENT,
        latent_rng=torch.Generator().manual_seed(seed),
    )
    return GANTrainer._latents(stand_in)


def test_each_rank_gets_its_own_column_of_the_shared_draw():
    everyone = torch.randn(MICRO, RANKS, BATCH, LATENT, generator=torch.Generator().manual_seed(7))
    slices = [rank_latents(rank) for rank in range(RANKS)]
    for rank, latents in enumerate(slices):
        assert latents.shape == (MICRO, BATCH, LATENT)
        assert torch.equal(latents, everyone[:, rank])
    assert not torch.equal(slices[0], slices[1]) and not torch.equal(slices[1], slices[2])
    assert torch.equal(torch.stack(slices, dim=1), everyone)  # together: the whole draw, each latent once
