"""Classic U-Net (Ronneberger et al. 2015) from MONAI's BasicUNet.

Four down and four up steps of double 3x3 conv + BatchNorm + ReLU, transposed-conv upsampling,
widths w..16w. Differs from the paper in padded convolutions (output = input size) and BatchNorm;
the last up step keeps 2w channels before concatenation (31.1M parameters at w=64, 1 channel).
"""
from __future__ import annotations

from monai.networks.nets import BasicUNet
from torch import nn


def classic_unet(in_channels: int, width: int = 64, out_channels: int = 1) -> nn.Module:
    w = width
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                     features=(w, 2 * w, 4 * w, 8 * w, 16 * w, w),
                     act="relu", norm="batch", dropout=0.0, upsample="deconv")
