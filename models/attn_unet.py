"""Attention U-Net (Oktay et al. 2018) from MONAI's AttentionUnet.

The U-Net above with additive attention gates on every skip connection; widths w..16w, four
down steps. MONAI's blocks use BatchNorm + ReLU and transposed-conv upsampling, as Oktay et al. 2018 draw it.
"""
from __future__ import annotations

from monai.networks.nets import AttentionUnet
from torch import nn


def attention_unet(in_channels: int, width: int = 64, out_channels: int = 1) -> nn.Module:
    w = width
    return AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=(w, 2 * w, 4 * w, 8 * w, 16 * w), strides=(2, 2, 2, 2))
