"""Devices by construction: restored state follows the model, options follow the images, ranks fail together.

No second real device exists here: "follows the model" is shown with the ``meta`` device (a device type of
its own, like ``cuda``) or with a recorder of ``.to`` calls; CUDA-only calls are replaced by recorders.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import nn

from callbacks import SelfRefiningDiffusion
from xai_train.callback import TrainState
from xai_train.checkpoint.reading import restore_rng
from xai_train.config.gan import GANTrainConfig
from xai_train.diffusion.models import build_unet
from xai_train.distributed import rank_consistent, synchronize
from xai_train.ema import load_ema_state
from xai_train.errors import UserError
from xai_train.explain import METHODS, attribute
from xai_train.explain.precision import match_options
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

WORKER = Path(__file__).with_name("dist_user_error_worker.py")
IMAGES = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --- EMA after a resume ---------------------------------------------------------------------------------
def test_load_ema_state_puts_the_shadow_weights_on_the_models_device():
    saved = EMAModel(nn.Linear(3, 2).parameters()).state_dict()  # as read from a checkpoint: CPU tensors
    model = nn.Linear(3, 2, device="meta")  # the model lives elsewhere (a GPU in a real resume)
    ema = EMAModel(nn.Linear(3, 2).parameters())
    load_ema_state(ema, saved, model)
    assert [p.device.type for p in ema.shadow_params] == ["meta", "meta"]


def test_gan_resume_moves_the_ema_to_the_generators_device(monkeypatch):
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    config = GANTrainConfig(batch_size=8, max_steps=1, ema_decay=0.9, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(generator, discriminator, IMAGES, config, cpu=True)
    state = trainer.trainer_state()
    with torch.no_grad():
        state["ema"]["shadow_params"] = [torch.full_like(p, 0.25) for p in state["ema"]["shadow_params"]]
    moves = []
    real_to = trainer.ema.to
    monkeypatch.setattr(trainer.ema, "to", lambda device=None, **kw: moves.append(device) or real_to(device, **kw))
    trainer.load_trainer_state(state)
    assert moves == [next(trainer.accelerator.unwrap_model(trainer.generator).parameters()).device]
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in trainer.ema.shadow_params)


# --- explainer options follow the images ---------------------------------------------------------------
TENSOR_OPTIONS = {
    "integrated_gradients": {"baselines": "one", "n_steps": 4},
    "deeplift": {"baselines": "one"},
    "deeplift_shap": {"baselines": "many"},
    "gradient_shap": {"baselines": "many"},
    "occlusion": {"baselines": "one"},
    "lime": {"baselines": "one", "feature_mask": "mask", "n_samples": 24},
    "kernel_shap": {"baselines": "one", "feature_mask": "mask", "n_samples": 24},
}


def test_every_method_with_a_tensor_option_is_covered():
    takes_tensors = {
        name
        for name, fn in METHODS.items()
        if {"baselines", "feature_mask"} & set(fn.__code__.co_varnames[: fn.__code__.co_kwonlyargcount + 2])
    }
    assert takes_tensors == set(TENSOR_OPTIONS)


def build_options(method: str, dtype: torch.dtype) -> dict:
    gen = torch.Generator().manual_seed(4)
    values = {
        "one": torch.rand(1, 1, 32, 32, generator=gen, dtype=torch.float64).to(dtype) - 0.5,
        "many": torch.rand(4, 1, 32, 32, generator=gen, dtype=torch.float64).to(dtype) - 0.5,
        "mask": (torch.arange(32)[:, None] // 8 * 4 + torch.arange(32)[None, :] // 8),
    }
    return {k: values[v] if isinstance(v, str) else v for k, v in TENSOR_OPTIONS[method].items()}


@pytest.mark.parametrize("method", list(TENSOR_OPTIONS))
def test_float64_baselines_are_moved_to_the_images_dtype_for_every_explainer(method):
    """float64 (or CPU) options with float32 (or CUDA) images: one ``.to`` in attribute moves them all."""
    torch.manual_seed(0)
    discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)[1]
    images = IMAGES[:3]
    results = []
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(1)
        np.random.seed(1)
        results.append(attribute(discriminator, images, method, **build_options(method, dtype)))
    assert results[1].dtype == torch.float32
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-7)


def test_match_options_moves_tensors_to_the_images_device():
    images = torch.zeros(2, 1, 4, 4, device="meta")
    options = {"baselines": torch.zeros(1, 1, 4, 4, dtype=torch.float64), "feature_mask": torch.zeros(4, 4).long()}
    moved = match_options({**options, "n_samples": 8}, images)
    assert moved["baselines"].device.type == moved["feature_mask"].device.type == "meta"
    assert moved["baselines"].dtype == torch.float32 and moved["feature_mask"].dtype == torch.int64
    assert moved["n_samples"] == 8


# --- SRD's online highlighter after a resume ---------------------------------------------------------------
def test_srd_replay_buffer_follows_the_device_after_resume():
    torch.manual_seed(0)
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    callback = SelfRefiningDiffusion(
        lambda n, s, g: images[:n], images, first_process=0, highlighter_width=4, highlighter_training="online"
    )
    callback.on_train_start(TrainState(Accelerator(cpu=True), models={"unet": build_unet(16, 1, (16, 32))}))
    callback.buffer.add(images, step=0)
    saved = callback.state_dict()
    callback._load(saved, torch.device("meta"))  # what on_train_start does with the UNet's device
    assert callback.buffer.images.device.type == "meta"
    assert len(callback.buffer) == 8


# --- CUDA RNG states of more GPUs than this process sees ----------------------------------------------------
def test_restore_rng_with_fewer_gpus_restores_what_fits_and_warns(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))
    cuda_states = [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]
    states = {
        "random_state": random.getstate(),
        "numpy_random_seed": np.random.get_state(),
        "torch_manual_seed": torch.get_rng_state(),
        "torch_cuda_manual_seed": cuda_states,
    }
    with pytest.warns(UserWarning, match="CUDA RNG states of 4 GPUs, this process sees 1: restoring the first 1"):
        restore_rng(states)
    assert len(restored) == 1 and len(restored[0]) == 1 and torch.equal(restored[0][0], cuda_states[0])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many GPUs as saved: no warning
        restore_rng(states)
    assert len(restored[1]) == 4


# --- timers on CUDA ---------------------------------------------------------------------------------------
def test_synchronize_waits_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronize(torch.device("cpu"))
    synchronize(torch.device("cuda", 0))
    assert calls == [torch.device("cuda", 0)]


def test_the_training_loop_synchronizes_around_each_timed_step(monkeypatch):
    import xai_train.trainers.loop as loop

    calls = []
    monkeypatch.setattr(loop, "synchronize", lambda device: calls.append(device))
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
    config = GANTrainConfig(batch_size=8, max_steps=2, sample_every=0, checkpoint_every=0)
    GANTrainer(generator, discriminator, IMAGES, config, cpu=True).train()
    assert calls == [torch.device("cpu")] * 4  # before and after each of the 2 steps


# --- a user error on one rank ----------------------------------------------------------------------------
def test_rank_consistent_in_one_process_keeps_the_error():
    with pytest.raises(UserError, match="^bad input$"):
        with rank_consistent(Accelerator(cpu=True), "on_generator_forward"):
            raise UserError("bad input")
    with rank_consistent(Accelerator(cpu=True), "on_generator_forward"):
        pass  # no error: nothing raised


@pytest.mark.slow
def test_a_user_error_on_one_rank_stops_both_ranks_with_the_same_message(tmp_path, two_ranks):
    for rank, (returncode, stderr) in enumerate(two_ranks(WORKER, str(tmp_path))):
        assert returncode == 1, f"rank {rank}: {stderr[-3000:]}"
    messages = [(tmp_path / f"rank{rank}_user_error.txt").read_text() for rank in range(2)]
    assert messages[0] == messages[1]
    assert messages[0].startswith("on_generator_forward failed: rank 1: attribute(): the images")
