import pytest
import torch
from torch import Tensor, nn

from xai_train.metrics import InceptionFeatures

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class FakeInception(nn.Module):
    """Stands in for NVIDIA's TorchScript file: same call, uint8 input, 2048 features."""

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        assert img.dtype == torch.uint8 and img.shape[1] == 3 and return_features
        pooled = img.float().mean(dim=(2, 3)) / 255
        return pooled.repeat(1, 683)[:, :2048]


def test_torchscript_file_gives_named_2048d_features(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(FakeInception()).save(str(path))
    extractor = InceptionFeatures(path)
    assert extractor.num_features == 2048 and extractor.name == "inception-2015-12-05"
    grey = torch.zeros(4, 1, 16, 16)  # mid-grey: 127.5 rounds to 128
    torch.testing.assert_close(extractor(grey), torch.full((4, 2048), 128 / 255))
    rgb = torch.rand(3, 3, 16, 16) * 2 - 1
    expected = ((rgb + 1) * 127.5).round().mean(dim=(2, 3)) / 255
    torch.testing.assert_close(extractor(rgb)[:, :3], expected)


def test_state_dict_file_explains_what_is_needed(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="requires torchvision.*inception-2015-12-05.pt"):
        InceptionFeatures(path)


def test_missing_file_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        InceptionFeatures(tmp_path / "absent.pt")
