"""One mirroring rule for TTA: on a model that is not mirror-symmetric, the torch path (binary and
multi-class) and the numpy path give the mean of the plain and the mirrored-back predictions."""
import numpy as np
import torch
from torch import nn

from medseg.inference import predict_class_probs, predict_probs
from medseg.tta import flip_averaged, mirrored, with_tta


class LeftWeighted(nn.Module):
    """A 1x1 conv plus a ramp over the width: its output changes when the input is mirrored."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2, 2, x.shape[-1])
        return self.conv(x) * 3 + ramp


def test_numpy_and_torch_mirror_the_width_axis_they_are_told():
    a = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(mirrored(a), a[..., ::-1]) and mirrored(a).flags["C_CONTIGUOUS"]
    assert np.array_equal(mirrored(a, 1), a[:, ::-1])
    assert torch.equal(mirrored(torch.from_numpy(a)), torch.from_numpy(a[..., ::-1].copy()))
    assert np.allclose(flip_averaged(lambda v: v * 2.0, a.astype(float)), a * 2.0)  # equivariant: unchanged


def test_torch_tta_is_the_mean_of_plain_and_mirrored_back_predictions():
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 12, 1), dtype=np.uint8)
    binary, mirrored_images = LeftWeighted(1), np.ascontiguousarray(images[:, :, ::-1])
    expected = (predict_probs(binary, images, torch.device("cpu"))
                + predict_probs(binary, mirrored_images, torch.device("cpu"))[..., ::-1]) / 2
    got = predict_probs(binary, images, torch.device("cpu"), tta=True)
    assert np.allclose(got, expected, atol=1e-5) and not np.allclose(got, predict_probs(binary, images, torch.device("cpu")))
    three = LeftWeighted(3)
    expected = (predict_class_probs(three, images, torch.device("cpu"), True)
                + predict_class_probs(three, mirrored_images, torch.device("cpu"), True)[..., ::-1]) / 2
    tta = with_tta(lambda model, imgs: predict_class_probs(model, imgs, torch.device("cpu"), True))
    assert np.allclose(tta(three, images), expected, atol=1e-6)
