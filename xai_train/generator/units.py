"""Units of a generator: find a layer by name, read its channels, and scale or set them with a hook.

A *unit* is one channel of a named generator layer whose output is a (B, K, h, w) map (GAN Dissection's
vocabulary). Everything here works on any ``nn.Module`` generator with named submodules and a
``latent_dim``; edits are forward hooks that are removed when the ``with`` block ends, so the generator is
left exactly as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

from xai_train.errors import UserError


def channel_layers(generator: nn.Module, latent_dim: int | None = None) -> dict[str, tuple[int, int, int]]:
    """Names of the generator's submodules whose output is a (B, K, h, w) map, with (K, h, w), in call order.

    Found with one forward pass on two zero latents (in eval mode, restored afterwards). A container whose
    output is its last child's output tensor (``project`` of a ``project.act`` block) is not listed: it has
    the same units as that child, and an edit hook on both would apply twice.

    Args:
        generator: maps (B, latent_dim) latents to images.
        latent_dim: the latent length; default ``generator.latent_dim``.

    Returns:
        ``{name: (K, h, w)}`` in the order the modules ran (the root module excluded).

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> layers = channel_layers(DCGANGenerator(image_size=32, channels=1, width=8))
        >>> layers["project.act"], layers["upsample.0.act"], "project" in layers
        ((32, 4, 4), (16, 8, 8), False)
    """
    return probe_layers(generator, latent_dim)[0]


def probe_layers(
    generator: nn.Module, latent_dim: int | None = None
) -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    """``(channel_layers, {container: the layer whose output tensor it returns})`` from one forward pass."""
    latent_dim = latent_dim or generator.latent_dim
    found: dict[str, tuple[int, int, int]] = {}
    repeats: dict[str, str] = {}
    owners: list[tuple[Tensor, str]] = []  # outputs already listed (kept alive, so `is` stays meaningful)
    names = {module: name for name, module in generator.named_modules() if name}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        name = names[module]
        if not isinstance(output, Tensor) or output.dim() != 4 or name in found or name in repeats:
            return
        owner = next((owner for tensor, owner in owners if tensor is output), None)
        if owner is not None:  # hooks of children run first: this container hands back a child's tensor
            repeats[name] = owner
            return
        found[name] = tuple(output.shape[1:])
        owners.append((output, name))

    handles = [module.register_forward_hook(record) for module in names]
    was_training = generator.training
    try:
        generator.eval()
        with torch.no_grad():
            parameter = next(generator.parameters(), None)
            device = parameter.device if parameter is not None else "cpu"
            generator(torch.zeros(2, latent_dim, device=device))
    finally:
        generator.train(was_training)
        for handle in handles:
            handle.remove()
    return found, repeats


def find_layer(generator: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``, checked to output (B, K, h, w) channel maps.

    Args:
        generator: the generator.
        name: a dotted module name, e.g. ``"upsample.0.act"``.

    Returns:
        The module.

    Raises:
        UserError: the generator has no such module (the message lists the valid names), or the module's
            output is not a channel map (or only repeats a child's: the message names the child), or the
            generator has no layer with channel maps at all.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> find_layer(DCGANGenerator(image_size=32, channels=1, width=8), "project.act")
        ReLU()
    """
    layers, repeats = probe_layers(generator)
    if not layers:
        raise UserError(
            f"generator {type(generator).__name__} has no layer with (B, K, h, w) channel maps, so it has no "
            "units to dissect; use a convolutional generator (e.g. model.arch=dcgan)"
        )
    modules = dict(generator.named_modules())
    valid = ", ".join(layers)
    if name not in modules or not name:
        raise UserError(
            f"generator {type(generator).__name__} has no layer {name!r}; layers with channel maps: {valid}"
        )
    if name in repeats:
        raise UserError(f"layer {name!r} returns the output of its child {repeats[name]!r}: name {repeats[name]!r}")
    if name not in layers:
        raise UserError(
            f"layer {name!r} of {type(generator).__name__} does not output (B, K, h, w) channel maps; "
            f"choose one of: {valid}"
        )
    return modules[name]


def _module(generator: nn.Module, name: str) -> nn.Module:
    """The named submodule without a probing forward pass (which would run through active edit hooks)."""
    module = dict(generator.named_modules()).get(name) if name else None
    return module if module is not None else find_layer(generator, name)  # raises with the valid names


@dataclasses.dataclass(frozen=True)
class UnitEdit:
    """An edit of a layer's units: ``r ← value`` where ``insert``, else ``r ← scale · r``.

    Each field is (K,) (the same for every sample) or (B, K) (one row per sample, which lets one batched
    forward pass try many unit sets at once).

    Attributes:
        scale: multiplies the unit's map (1 = unchanged, 0 = ablated, 1 − s = suppressed by s).
        value: the constant written where ``insert`` is true (e.g. a high activation quantile).
        insert: which units are set to ``value`` instead of scaled.
    """

    scale: Tensor
    value: Tensor | None = None
    insert: Tensor | None = None

    @staticmethod
    def suppress(units: Tensor | list[int], num_units: int, strength: float = 1.0) -> UnitEdit:
        """Scales ``units`` by ``1 − strength`` (``strength=1`` ablates them).

        Example:
            >>> UnitEdit.suppress([1], 3, strength=0.5).scale
            tensor([1.0000, 0.5000, 1.0000])
        """
        indices = torch.as_tensor(units, dtype=torch.long).reshape(-1)
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_units):
            raise UserError(
                f"unit indices must lie in 0..{num_units - 1} (a layer of {num_units} units), got {indices.tolist()}"
            )
        scale = torch.ones(num_units)
        scale[indices] = 1.0 - strength
        return UnitEdit(scale)

    def apply(self, output: Tensor) -> Tensor:
        """The edited map: ``output`` (B, K, h, w) -> (B, K, h, w).

        Example:
            >>> edit = UnitEdit(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 0.0]), torch.tensor([False, False]))
            >>> edit.apply(torch.ones(1, 2, 1, 1)).flatten().tolist()
            [0.0, 1.0]
        """
        scale = rearrange(self.scale.to(output), "... k -> ... k 1 1")
        edited = output * scale
        if self.insert is not None and self.value is not None:
            insert = rearrange(self.insert.to(output.device), "... k -> ... k 1 1")
            value = rearrange(self.value.to(output), "... k -> ... k 1 1")
            edited = torch.where(insert, value.expand_as(edited), edited)
        return edited


@contextlib.contextmanager
def edit_units(generator: nn.Module, layer: str, edit: UnitEdit | None) -> Iterator[nn.Module]:
    """Applies ``edit`` to the output of ``layer`` for the duration of the block (``None``: no edit).

    Args:
        generator: the generator (not modified; the hook is removed on exit, also after an error).
        layer: a name accepted by :func:`find_layer`.
        edit: the unit edit.

    Yields:
        The generator.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> z = torch.randn(2, 100)
        >>> with edit_units(G, "to_image.conv", UnitEdit(torch.zeros(1))):
        ...     blank = G(z)
        >>> blank.abs().max().item()  # tanh(0) everywhere
        0.0
    """
    module = _module(generator, layer) if edit is not None else None
    handle = None
    if module is not None:
        handle = module.register_forward_hook(lambda _m, _i, output: edit.apply(output))
    try:
        yield generator
    finally:
        if handle is not None:
            handle.remove()


@contextlib.contextmanager
def recording(generator: nn.Module, layers: list[str]) -> Iterator[dict[str, Tensor]]:
    """Records the (possibly edited) output of each named layer on every forward pass inside the block.

    Register it *after* :func:`edit_units` on the same layer to see the edited map.

    Args:
        generator: the generator.
        layers: names accepted by :func:`find_layer`.

    Yields:
        A dict ``{name: (B, K, h, w)}`` filled by the forward passes (the last pass wins).

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> with recording(G, ["project.act"]) as seen:
        ...     _ = G(torch.randn(3, 100))
        >>> seen["project.act"].shape
        torch.Size([3, 32, 4, 4])
    """
    seen: dict[str, Tensor] = {}
    handles = []
    for name in layers:
        module = _module(generator, name)
        handles.append(module.register_forward_hook(lambda _m, _i, output, name=name: seen.__setitem__(name, output)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def sample_latents(num_samples: int, latent_dim: int, seed: int) -> Tensor:
    """Latents (num_samples, latent_dim) from N(0, I), deterministic for a seed (the global RNG is untouched).

    Example:
        >>> torch.equal(sample_latents(3, 4, seed=1), sample_latents(3, 4, seed=1))
        True
    """
    return torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(
    generator: nn.Module,
    latents: Tensor,
    layer: str | None = None,
    edit: UnitEdit | None = None,
    batch_size: int = 256,
    edits: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Images (and the layer's units) of many latents, in chunks, in eval mode, with an optional edit.

    Args:
        generator: the generator (used in eval mode; its mode is restored).
        latents: (N, latent_dim).
        layer: the layer whose (edited) output is returned too; ``None`` returns no activations.
        edit: an edit of ``layer``'s units; a (B, K) edit must have B = N.
        batch_size: latents per forward pass.
        edits: fixed unit scales ``{layer: (K,)}`` applied in every pass (e.g. a correction found earlier),
            before ``edit`` and the recording.

    Returns:
        ``(images (N, C, H, W), activations (N, K, h, w) or None)`` on the CPU.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> images, units = generate(G, torch.randn(5, 100), "project.act", batch_size=2)
        >>> images.shape, units.shape
        (torch.Size([5, 1, 32, 32]), torch.Size([5, 32, 4, 4]))
    """
    if edit is not None and layer is None:
        raise UserError("generate: an edit needs the layer it applies to")
    for name in [layer, *(edits or {})]:
        if name is not None:
            find_layer(generator, name)
    parameter = next(generator.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = generator.training
    generator.eval()
    images, units = [], []
    try:
        for start in range(0, len(latents), batch_size):
            rows = slice(start, start + batch_size)
            chunk_edit = edit
            if edit is not None and edit.scale.dim() == 2:
                chunk_edit = UnitEdit(
                    edit.scale[rows],
                    None if edit.value is None else edit.value[rows],
                    None if edit.insert is None else edit.insert[rows],
                )
            with contextlib.ExitStack() as stack:
                for fixed_layer, scale in (edits or {}).items():
                    stack.enter_context(edit_units(generator, fixed_layer, UnitEdit(scale)))
                stack.enter_context(edit_units(generator, layer, chunk_edit))
                seen = stack.enter_context(recording(generator, [layer] if layer else []))
                images.append(generator(latents[rows].to(device)).float().cpu())
            if layer is not None:
                units.append(seen[layer].float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(images), (torch.cat(units) if layer is not None else None)
