"""GAN EvalMetrics evaluates the EMA generator when the trainer keeps one (the weights of the sample grids)."""

import copy

import torch

from callbacks import EvalMetrics
from xai_train.config.gan import GANTrainConfig
from xai_train.metrics import ClassifierFeatures, FeatureClassifier
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


class RecordingEvalMetrics(EvalMetrics):
    """Keeps the generated batches of every evaluation."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.generated = []

    def _generate(self, state, start, size):
        images = super()._generate(state, start, size)
        self.generated.append(images)
        return images


def test_gan_eval_metrics_samples_the_ema_generator():
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, latent_dim=8, g_width=8, d_width=8)
    images = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(123)
    extractor = ClassifierFeatures(FeatureClassifier(1, 10, width=4, num_features=8), "toy-cnn", (1, 32, 32), {})
    metrics = RecordingEvalMetrics(
        real_images=images, extractor=extractor, every_n_steps=0, num_samples=8, batch_size=8, kid_subsets=2,
        kid_subset_size=4, seed=3,
    )  # fmt: skip
    config = GANTrainConfig(
        batch_size=8, max_steps=3, lr_g=1e-2, ema_decay=0.5, sample_every=0, checkpoint_every=0
    )  # a large lr moves G well away from its average
    trainer = GANTrainer(generator, discriminator, images, config, callbacks=[metrics], cpu=True)
    trainer.train()
    assert len(metrics.generated) == 1  # one evaluation, at max_steps

    raw = trainer.accelerator.unwrap_model(trainer.generator)
    averaged = copy.deepcopy(raw).eval()
    trainer.ema.copy_to(averaged.parameters())
    latents = torch.randn(8, 8, generator=torch.Generator().manual_seed(3 * 1_000_003))  # batch 0 of seed 3
    with torch.no_grad():
        expected, raw_output = averaged(latents), copy.deepcopy(raw).eval()(latents)
    torch.testing.assert_close(metrics.generated[0], expected, rtol=0, atol=1e-7)
    gap = float((metrics.generated[0] - raw_output).abs().max())
    assert gap > 1e-4, gap  # the raw G gives other samples (measured: ~2e-3)
    assert raw.training and all(  # the swap is undone: raw weights and mode are back
        torch.equal(p, q) for p, q in zip(raw.parameters(), copy.deepcopy(raw).parameters(), strict=True)
    )
