"""Standard Inception FID from a user-supplied TorchScript file (no torchvision, no torch-fidelity).

Nothing is downloaded here. The torchvision-free route to the standard FID network is NVIDIA's TorchScript
export of the TF Inception graph, ``inception-2015-12-05.pt`` (StyleGAN2-ADA / clean-fid metrics file,
https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt): it carries
its own code, takes uint8-valued (N, 3, H, W) images of any size (it resizes to 299 inside) and returns the
2048-d pool features with ``return_features=True``. FD on those features is the FID that papers report.

The ``pt_inception-2015-12-05-6726825d.pth`` file of pytorch-fid / torch-fidelity is a bare state dict:
it needs their Inception-v3 code, which needs torchvision, which this project cannot install next to a CPU
torch (DESIGN.md §7). :class:`InceptionFeatures` says so when given that file.

torch 2.13 marks ``torch.jit.load`` deprecated (it still works, with a DeprecationWarning); should a later
torch drop TorchScript, this route closes too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import repeat
from torch import Tensor

from xai_train.metrics.extractor import FeatureExtractor


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool features (2048-d) from a TorchScript ``inception-2015-12-05.pt``.

    Args:
        path: the TorchScript file.
        name: the extractor's name in reports (default ``"inception-2015-12-05"``: its FD is the FID).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a TorchScript module (e.g. pytorch-fid's ``.pth`` state dict).

    Example:
        >>> InceptionFeatures("missing.pt")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: ...
    """

    def __init__(self, path: str | Path, name: str = "inception-2015-12-05"):
        super().__init__(name, num_features=2048, image_shape=None)
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no Inception weights at {path}; standard FID needs NVIDIA's TorchScript file "
                "'inception-2015-12-05.pt' (see xai_train.metrics.inception), placed there by you: "
                "nothing is downloaded at run time. Without it, use the dataset's own feature classifier "
                "(xai_train.metrics.domain_feature_extractor)."
            )
        try:
            self.network = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"{path} is not a TorchScript module ({type(error).__name__}). If it is pytorch-fid's "
                "'pt_inception-2015-12-05-6726825d.pth' state dict: that file needs the Inception-v3 code of "
                "pytorch-fid/torch-fidelity, which requires torchvision (not installable here). Supply the "
                "TorchScript export 'inception-2015-12-05.pt' instead, or compute FID with pytorch-fid in a "
                "separate environment from saved samples."
            ) from error

    def forward(self, images: Tensor) -> Tensor:
        """Pool features (B, 2048) of images (B, C, H, W) in [-1, 1], C in {1, 3} (grey is repeated)."""
        self.check_images(images)
        if images.shape[1] not in (1, 3):
            raise ValueError(f"Inception FID needs 1 or 3 channels, got {images.shape[1]}")
        if images.shape[1] == 1:
            images = repeat(images, "b 1 h w -> b c h w", c=3)
        # The TF graph was fed 8-bit images: quantise exactly as the StyleGAN2-ADA metrics do.
        pixels = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return self.network(pixels, return_features=True).float()
