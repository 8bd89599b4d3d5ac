"""SelfRefiningDiffusion in the trainer: identity at zero weights, the plan it returns, resume, export."""

import copy

import pytest
import torch
from accelerate import Accelerator
from diffusers import DDPMPipeline

from callbacks import SelfRefiningDiffusion
from xai_train import Callback
from xai_train.callback import NoisePlan, TrainState
from xai_train.config.diffusion import DiffusionTrainConfig
from xai_train.data import derive_seed
from xai_train.diffusion import TimeConditionedDiscriminator, TimestepBound, add_noise
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.diffusion.pipeline import load_pipeline
from xai_train.diffusion.self_refine import batch_mean_fam, build_highlighter, fam_noise_scale, flaw_maps
from xai_train.trainers.diffusion import DiffusionTrainer

IMAGES = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def config(steps=4, **changes):
    values = dict(
        batch_size=4,
        max_steps=steps,
        lr=1e-3,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        log_every=1,
        sample_every=0,
        checkpoint_every=0,
        num_samples=4,
        sample_steps=2,
    )
    return DiffusionTrainConfig(**{**values, **changes})


def unet():
    torch.manual_seed(0)
    return build_unet(16, 1, (16, 32))  # the mid block has self-attention


def srd(box, **options):
    defaults = dict(
        first_process=1,
        fam_cycle=2,
        num_samples=4,
        sample_steps=2,
        highlighter_samples=8,
        highlighter_epochs=1,
        highlighter_batch_size=4,
        highlighter_width=4,
        buffer_capacity=16,
        seed=0,
    )
    return SelfRefiningDiffusion(
        lambda n, steps, generator: box[0].sample(n, steps, generator), IMAGES, **{**defaults, **options}
    )


def trainer(callbacks, box, steps=4, run_dir=None, resume="", sampler=None, **changes):
    t = DiffusionTrainer(
        unet(),
        build_noise_scheduler(100),
        IMAGES,
        config(steps, **changes),
        callbacks=callbacks,
        sampler=sampler,
        run_dir=run_dir,
        resume=resume,
        cpu=True,
    )
    box.append(t)
    return t


class StopAt(Callback):
    """Stops the run after ``step`` (a resume then continues from its last checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, logs):
        if state.step == self.step:
            state.request_stop()


def weights(t):
    return {k: v.clone() for k, v in t.accelerator.unwrap_model(t.unet).state_dict().items()}


def test_zero_weights_give_the_plain_training_steps_bitwise():
    plain = trainer([], [])
    plain.train()
    box: list = []
    callback = srd(box, noise_weight=0.0, attention_weight=0.0)
    refined = trainer([callback], box)
    refined.train()
    assert callback.refreshes == 2  # steps 1 and 3: the FAM really was computed and applied
    expected, got = weights(plain), weights(refined)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_nonzero_weights_change_the_training():
    plain = trainer([], [])
    plain.train()
    box: list = []
    refined = trainer([srd(box, noise_weight=0.5, attention_weight=0.5)], box)
    refined.train()
    expected, got = weights(plain), weights(refined)
    assert any(not torch.equal(expected[k], got[k]) for k in expected)


class FixedSamples:
    def __init__(self):
        self.calls = 0

    def __call__(self, n, steps, generator):
        self.calls += 1
        return torch.rand(n, 1, 16, 16, generator=generator) * 2 - 1


def plans(callback, steps, seed=1):
    """Drives the hooks by hand (no trainer) and returns the plan of each step."""
    state = TrainState(Accelerator(cpu=True), max_steps=steps, models={"unet": unet()})
    callback.on_train_start(state)
    g = torch.Generator().manual_seed(seed)
    out = []
    for step in range(steps):
        state.step = step
        clean = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
        plan = NoisePlan(torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 100, (4,), generator=g))
        out.append((clean, callback.on_diffusion_noise(state, clean, plan)))
    return out


@pytest.mark.parametrize("target", ["reference", "consistent"])
def test_plan_of_the_reference_semantics(target):
    fh = build_highlighter(16, 1, width=4, seed=1)
    samples = FixedSamples()
    callback = SelfRefiningDiffusion(
        samples,
        IMAGES,
        fh,
        pretrained_highlighter=True,
        first_process=2,
        fam_cycle=3,
        noise_weight=0.3,
        target=target,
        num_samples=6,
    )
    result = plans(callback, 7)
    assert [plan for _, plan in result[:2]] == [None, None]  # base phase: plain steps
    assert samples.calls == 2  # refreshes at steps 2 and 5
    # the FAM of step 5: the batch mean of FH Grad-CAMs of the samples drawn with that step's generator
    generator = torch.Generator().manual_seed(derive_seed(0, "srd_fam", 5, 0))
    expected = batch_mean_fam(flaw_maps(fh, (torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1).clamp(-1, 1)))
    assert torch.equal(callback.fam, expected)
    for _, plan in result[5:]:
        assert torch.equal(plan.noise_scale, fam_noise_scale(expected, 0.3))
        assert plan.scaled_target is (target == "consistent")
    assert torch.equal(callback.attention.fam, expected)


def test_per_sample_maps_come_from_each_clean_image():
    fh = build_highlighter(16, 1, width=4, seed=1)
    callback = SelfRefiningDiffusion(
        FixedSamples(),
        IMAGES,
        fh,
        pretrained_highlighter=True,
        first_process=0,
        fam_reduce="per_sample",
        noise_weight=0.3,
    )
    for clean, plan in plans(callback, 2):
        assert torch.equal(plan.noise_scale, fam_noise_scale(flaw_maps(fh, clean), 0.3))
        assert plan.noise_scale.shape == (4, 1, 16, 16)


class Spy(Callback):
    """Records the SRD state after every step."""

    def __init__(self, callback):
        self.callback, self.fams = callback, []

    def on_step_end(self, state, logs):
        self.fams.append(None if self.callback.fam is None else self.callback.fam.clone())


@pytest.mark.parametrize("training", ["offline", "online"])
def test_resume_mid_refinement_equals_a_straight_run(tmp_path, training):
    box: list = []
    straight_cb = srd(box, highlighter_training=training, attention_weight=0.5, noise_weight=0.2)
    straight = trainer([straight_cb], box, steps=6)
    straight.train()
    box = []  # stopped after step 4: the FAM of step 3 is in use; the next refresh is at step 5
    first = trainer(
        [srd(box, highlighter_training=training, attention_weight=0.5, noise_weight=0.2), StopAt(4)],
        box,
        steps=6,
        run_dir=tmp_path,
    )
    first.train()
    box = []
    resumed_cb = srd(box, highlighter_training=training, attention_weight=0.5, noise_weight=0.2)
    resumed = trainer([resumed_cb], box, steps=6, run_dir=tmp_path, resume="auto")
    resumed.train()
    assert resumed_cb.refreshes == straight_cb.refreshes == 3
    expected, got = weights(straight), weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.equal(straight_cb.fam, resumed_cb.fam)
    for a, b in zip(
        straight_cb.attention.projections.parameters(), resumed_cb.attention.projections.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(straight_cb.highlighter.parameters(), resumed_cb.highlighter.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_with_the_per_pixel_sampler_equals_a_straight_run(tmp_path):
    """Consistent target with its per-pixel sampler as the run's sampler: the FAM samples of step 5 come from the
    sampler with the FAM of step 3, restored on resume; both exports carry the last FAM."""
    options = dict(target="consistent", attention_weight=0.5, noise_weight=0.2)
    box: list = []
    straight_cb = srd(box, **options)
    straight = trainer([straight_cb], box, steps=6, run_dir=tmp_path / "straight", sampler=straight_cb.sampler())
    straight.train()
    box = []
    first_cb = srd(box, **options)
    trainer([first_cb, StopAt(4)], box, steps=6, run_dir=tmp_path / "resumed", sampler=first_cb.sampler()).train()
    box = []
    resumed_cb = srd(box, **options)
    resumed = trainer(
        [resumed_cb], box, steps=6, run_dir=tmp_path / "resumed", resume="auto", sampler=resumed_cb.sampler()
    )
    resumed.train()
    assert straight_cb.refreshes == resumed_cb.refreshes == 3 and torch.equal(straight_cb.fam, resumed_cb.fam)
    expected, got = weights(straight), weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    for run, callback in (("straight", straight_cb), ("resumed", resumed_cb)):
        assert torch.equal(load_pipeline(tmp_path / run / "pipeline").fixed_map.importance, callback.fam)


def test_export_is_a_plain_ddpm_pipeline_equal_to_the_ema_unet(tmp_path):
    box: list = []
    callback = srd(box, attention_weight=0.5, noise_weight=0.2)
    t = trainer([callback], box, steps=3, run_dir=tmp_path)
    t.train()
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    loaded = pipeline.unet
    assert set(loaded.state_dict()) == set(unet().state_dict())  # no projection weights in the UNet
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in [loaded.mid_block.attentions[0].processor])
    x, steps = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(9)), torch.tensor([5, 60])
    trained = t.accelerator.unwrap_model(t.unet)
    assert type(trained.mid_block.attentions[0].processor).__name__ == "AttnProcessor2_0"  # removed at the end
    ema_unet = copy.deepcopy(trained).eval()
    t.ema.copy_to(ema_unet.parameters())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x, steps).sample, ema_unet(x, steps).sample)


def test_discriminator_source_and_protect_direction():
    """fam_source='discriminator': D(x, t=0) explains the samples (no FH); 'protect' lowers the noise on flaws."""
    torch.manual_seed(0)
    discriminator = TimeConditionedDiscriminator(1, (8, 16), groups=0)
    samples = FixedSamples()
    callback = SelfRefiningDiffusion(
        samples, IMAGES, first_process=0, fam_source="discriminator", direction="protect", noise_weight=0.5,
        num_samples=5,
    )  # fmt: skip
    assert callback.highlighter is None
    state = TrainState(Accelerator(cpu=True), models={"unet": unet(), "discriminator": discriminator})
    callback.on_train_start(state)
    clean = torch.zeros(4, 1, 16, 16)
    plan = callback.on_diffusion_noise(state, clean, NoisePlan(torch.randn(4, 1, 16, 16), torch.zeros(4).long()))
    generator = torch.Generator().manual_seed(derive_seed(0, "srd_fam", 0, 0))
    images = (torch.rand(5, 1, 16, 16, generator=generator) * 2 - 1).clamp(-1, 1)
    expected = batch_mean_fam(flaw_maps(TimestepBound(discriminator, torch.tensor(0)), images))
    assert torch.equal(callback.fam, expected)
    assert torch.equal(plan.noise_scale, 1 - 0.5 * expected)
    assert float(plan.noise_scale.min()) >= 0.5


def test_per_sample_maps_of_the_discriminator_on_x_t():
    torch.manual_seed(0)
    discriminator = TimeConditionedDiscriminator(1, (8, 16), groups=0)
    alphas = build_noise_scheduler(100).alphas_cumprod
    callback = SelfRefiningDiffusion(
        FixedSamples(), IMAGES, alphas_cumprod=alphas, first_process=0, fam_source="discriminator",
        fam_reduce="per_sample", noise_weight=0.3,
    )  # fmt: skip
    state = TrainState(Accelerator(cpu=True), models={"unet": unet(), "discriminator": discriminator})
    callback.on_train_start(state)
    g = torch.Generator().manual_seed(4)
    clean, noise, t = (
        torch.rand(4, 1, 16, 16, generator=g) * 2 - 1,
        torch.randn(4, 1, 16, 16, generator=g),
        torch.tensor([0, 5, 50, 99]),
    )
    plan = callback.on_diffusion_noise(state, clean, NoisePlan(noise, t))
    expected = flaw_maps(TimestepBound(discriminator, t), add_noise(clean, noise, t, alphas))
    assert torch.equal(plan.noise_scale, 1 + 0.3 * expected)
    assert not torch.equal(expected[0], expected[1])  # one map per sample
