"""GANMEX baselines (Shih, Tien, Karnin 2020): the closest realistic image of another class as the attribution
baseline.

``B_c(x) = argmin_x̂ ‖x − x̂‖₁ − log R(x̂) − log S_c(x̂)`` with R = sigmoid(D) a realism critic and S_c the frozen
classifier's probability of class c. Two forms:

* :func:`latent_baseline` — per-image optimisation of x̂ = G(z) in a GAN's latent space, from z₀ = G⁻¹(x).
* :class:`Translator` / :func:`train_translator` — the authors' amortised form, a StarGAN-style G(x, c) trained
  once with a WGAN-GP critic + λ_cls·CE(S(G(x, c)), c) + λ_sim·‖x − G(x, c)‖₁ (λ_cls = 1000, λ_sim = 100,
  gradient penalty 10, as in their code); learning rates are raised for a CPU budget (see the function).

:func:`class_attribution` explains a classifier's class score with ``xai_train.explain.attribute`` and any
baseline; :func:`simple_baselines` gives the usual zero / blur / mean ones to compare with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from xai_train.counterfactual.generators import GANDecoder
from xai_train.counterfactual.manifold import as_targets
from xai_train.explain import attribute, explaining, gaussian_blur


def ganmex_loss(
    images: Tensor,
    candidates: Tensor,
    classifier: nn.Module,
    critic: nn.Module,
    targets: Tensor,
    sim_weight: float = 1.0,
) -> Tensor:
    """Per-image GANMEX objective (B,): sim_weight·‖x − x̂‖₁ − log sigmoid(D(x̂)) − log softmax(S(x̂))_c.

    Example:
        >>> S, D = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> x = torch.zeros(3, 1, 2, 2)
        >>> ganmex_loss(x, x, S, D, torch.tensor([0, 1, 0])).shape
        torch.Size([3])
    """
    distance = reduce((images - candidates).abs(), "b c h w -> b", "sum")
    unreal = F.softplus(-critic(candidates).reshape(-1))  # −log sigmoid(logit)
    wrong_class = F.cross_entropy(classifier(candidates), targets, reduction="none")
    return sim_weight * distance + unreal + wrong_class


def latent_baseline(
    classifier: nn.Module,
    decoder: GANDecoder,
    critic: nn.Module,
    images: Tensor,
    target: int | Tensor,
    *,
    latents: Tensor | None = None,
    sim_weight: float = 1.0,
    lr: float = 0.05,
    steps: int = 300,
    progress: bool = False,
) -> Tensor:
    """GANMEX baselines by Adam on z (all images in one batch): argmin of :func:`ganmex_loss` over x̂ = G(z).

    Args:
        classifier: S, (B, C, H, W) -> logits (B, K) (eval mode for the call).
        decoder: the GAN generator (``decoder.encode`` gives z₀ unless ``latents`` is given).
        critic: the GAN's discriminator D, images -> logits (B, 1) (eval mode for the call).
        images: (B, C, H, W) in [-1, 1].
        target: the class c of the baseline (one int, or (B,)).
        latents: z₀, skipping the inversion.
        sim_weight: weight of the L1 distance (1 in the paper's formula).
        lr: Adam learning rate.
        steps: optimisation steps.
        progress: show a tqdm bar.

    Returns:
        (B, C, H, W) baselines G(z*), clipped to [-1, 1].

    Example:
        >>> G = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Unflatten(1, (1, 2, 2)))
        >>> G.latent_dim = 2
        >>> S, D = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> latent_baseline(S, GANDecoder(G), D, torch.zeros(2, 1, 2, 2), 1, latents=torch.zeros(2, 2), steps=3).shape
        torch.Size([2, 1, 2, 2])
    """
    from tqdm.auto import tqdm

    with explaining(classifier), explaining(critic):
        targets = as_targets(target, images.shape[0], classifier(images[:1]).shape[1]).to(images.device)
        z = (decoder.encode(images) if latents is None else latents).detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        for _ in tqdm(range(steps), desc="ganmex", disable=not progress):
            candidates = decoder.decode(z).clamp(-1, 1)
            loss = ganmex_loss(images, candidates, classifier, critic, targets, sim_weight).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return decoder.decode(z).clamp(-1, 1)


class Translator(nn.Module):
    """StarGAN-style image-to-image translator G(x, c) -> x̂, kept small: x̂ = clip(x + Δ(x, one-hot c)).

    The residual form starts at the identity, which the similarity loss wants anyway.

    Args:
        channels: image channels C.
        num_classes: K.
        width: hidden channels.

    Example:
        >>> Translator(1, 3, width=4)(torch.zeros(2, 1, 8, 8), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Conv2d(channels + num_classes, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, images: Tensor, targets: Tensor) -> Tensor:
        code = F.one_hot(targets, self.num_classes).float()
        code = repeat(code, "b k -> b k h w", h=images.shape[2], w=images.shape[3])
        return (images + self.net(torch.cat([images, code], dim=1))).clamp(-1, 1)


class Critic(nn.Module):
    """WGAN critic for the translator: three stride-2 convs with LeakyReLU, mean-pooled to one score (B, 1).

    Example:
        >>> Critic(1, width=4)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 1])
    """

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return reduce(self.net(images), "b 1 h w -> b 1", "mean")


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """WGAN-GP: E[(‖∇D(x̃)‖₂ − 1)²] at random interpolates x̃ of real and fake images.

    Example:
        >>> critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = critic[1].weight.fill_(0.5)  # ‖∇D‖ = 1 everywhere: no penalty
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> gradient_penalty(critic, x, x + 1, torch.Generator().manual_seed(0)).item()
        0.0
    """
    mix = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    return ((rearrange(grad, "b c h w -> b (c h w)").norm(dim=1) - 1) ** 2).mean()


def train_translator(
    classifier: nn.Module,
    images: Tensor,
    num_classes: int,
    *,
    steps: int = 500,
    batch_size: int = 64,
    lambda_cls: float = 1000.0,
    lambda_sim: float = 100.0,
    lambda_gp: float = 10.0,
    lr_g: float = 1e-3,
    lr_d: float = 1e-3,
    width: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> Translator:
    """Trains the amortised GANMEX translator against a frozen classifier (one critic step per G step).

    The losses and weights are the authors' (λ_cls = 1000, λ_sim = 100, GP 10; Adam betas (0.9, 0.999)); their
    learning rates (G 2e-5, D 1e-4) need hours of training, so the defaults here are 1e-3 for a few hundred CPU
    steps. Targets are drawn uniformly per image (as in StarGAN), so the identity is learnt for c = label.

    Args:
        classifier: S, frozen (eval mode for the call), images -> logits (B, num_classes).
        images: (N, C, H, W) real images in [-1, 1] (no labels needed: S supplies the class signal).
        num_classes: K.
        steps: generator steps.
        batch_size: images per step.
        lambda_cls: weight of CE(S(G(x, c)), c).
        lambda_sim: weight of the mean L1 distance ‖x − G(x, c)‖₁.
        lambda_gp: gradient-penalty weight.
        lr_g: translator learning rate.
        lr_d: critic learning rate.
        width: hidden channels of both networks.
        seed: initialisation, batches and targets.
        progress: show a tqdm bar.

    Returns:
        The translator, eval mode, frozen.

    Example:
        >>> S = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        >>> G = train_translator(S, torch.rand(8, 1, 8, 8) * 2 - 1, 2, steps=2, batch_size=4, width=4)
        >>> G(torch.zeros(1, 1, 8, 8), torch.tensor([1])).shape
        torch.Size([1, 1, 8, 8])
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        translator, critic = Translator(images.shape[1], num_classes, width), Critic(images.shape[1], width)
    opt_g = torch.optim.Adam(translator.parameters(), lr=lr_g, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr_d, betas=(0.9, 0.999))
    with explaining(classifier):
        for _ in tqdm(range(steps), desc="translator", disable=not progress):
            real = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
            targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
            fake = translator(real, targets)
            d_loss = critic(fake.detach()).mean() - critic(real).mean()
            d_loss = d_loss + lambda_gp * gradient_penalty(critic, real, fake.detach(), generator)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = (
                -critic(fake).mean()
                + lambda_cls * F.cross_entropy(classifier(fake), targets)
                + lambda_sim * (fake - real).abs().mean()
            )
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
    return translator.eval().requires_grad_(False)


class ClassScore(nn.Module):
    """One class's logit of a classifier as the (B, 1) score ``xai_train.explain.attribute`` explains.

    Example:
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> ClassScore(f, 2)(torch.zeros(5, 1, 2, 2)).shape
        torch.Size([5, 1])
    """

    def __init__(self, classifier: nn.Module, target: int) -> None:
        super().__init__()
        self.classifier, self.target = classifier, target

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images)[:, self.target : self.target + 1]


def class_attribution(
    classifier: nn.Module, images: Tensor, target: int, method: str = "integrated_gradients", **options: object
) -> Tensor:
    """Attributions (B, C, H, W) of the classifier's logit of class ``target`` via ``attribute``.

    Args:
        classifier: images -> logits (B, K).
        images: (B, C, H, W).
        target: the explained class.
        method: any of ``xai_train.explain.METHODS`` (``integrated_gradients``, ``deeplift``,
            ``deeplift_shap``, ...).
        **options: the method's options, e.g. ``baselines=`` a (B, C, H, W) GANMEX baseline.

    Example:
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.ones(1, 1, 2, 2)
        >>> a = class_attribution(f, x, 1, "integrated_gradients", baselines=torch.zeros_like(x))
        >>> torch.allclose(a.sum(), f(x)[0, 1] - f(torch.zeros_like(x))[0, 1], atol=1e-4)
        True
    """
    return attribute(ClassScore(classifier, target), images, method, **options)


def simple_baselines(images: Tensor, dataset_mean: Tensor, blur_sigma: float = 3.0) -> dict[str, Tensor]:
    """The baselines GANMEX is compared with: ``zero`` (mid-grey), ``blur`` (Gaussian-blurred x), ``mean``
    (the dataset's mean image), each (B, C, H, W).

    Example:
        >>> b = simple_baselines(torch.ones(2, 1, 8, 8), torch.zeros(1, 8, 8))
        >>> sorted(b), b["mean"].shape
        (['blur', 'mean', 'zero'], torch.Size([2, 1, 8, 8]))
    """
    return {
        "zero": torch.zeros_like(images),
        "blur": gaussian_blur(images, blur_sigma),
        "mean": dataset_mean.expand_as(images).clone(),
    }


def mass_inside(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share (B,) of the absolute attribution (summed over channels) that lies inside each mask (B, 1, H, W).

    Example:
        >>> a = torch.ones(1, 1, 2, 2)
        >>> mass_inside(a, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])).tolist()
        [0.25]
    """
    magnitude = reduce(attributions.abs(), "b c h w -> b 1 h w", "sum")
    inside = reduce(magnitude * masks, "b 1 h w -> b", "sum")
    return inside / reduce(magnitude, "b 1 h w -> b", "sum").clamp_min(1e-12)
