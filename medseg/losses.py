"""Loss factory keyed by `loss.type`; MONAI losses where they exist, segmentation-models-pytorch's
for the IoU losses MONAI lacks (soft Jaccard, Lovász hinge).

Hand-written: balanced_ce (per-image class-area weighting, seed 000) and the focal exponent on
MONAI's Tversky loss, which MONAI does not provide for the binary sigmoid case.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from segmentation_models_pytorch.losses import JaccardLoss, LovaszLoss
from torch import nn

from medseg.errors import MedsegError
from medseg.params import Spec, num


class BalancedBCE(nn.Module):
    """BCE where each image's foreground and background pixels carry half the weight each."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fg = target.mean(dim=(1, 2, 3), keepdim=True)
        w_pos = 0.5 / fg.clamp_min(1e-3)
        w_neg = 0.5 / (1 - fg).clamp_min(1e-3)
        weight = torch.where(target > 0.5, w_pos, w_neg)
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


class FocalTversky(nn.Module):
    """Focal Tversky loss (Abraham & Khan 2019): Tversky loss ** (1 / gamma)."""

    def __init__(self, alpha: float, beta: float, gamma: float) -> None:
        super().__init__()
        self.tversky = TverskyLoss(sigmoid=True, alpha=alpha, beta=beta, batch=True)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.tversky(logits, target).clamp_min(1e-7) ** (1.0 / self.gamma)


BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "dice": lambda cfg: DiceLoss(sigmoid=True, batch=True),
    "bce": lambda cfg: nn.BCEWithLogitsLoss(),
    "dice_bce": lambda cfg: DiceCELoss(sigmoid=True, batch=True),
    "balanced_ce": lambda cfg: BalancedBCE(),
    "weighted_ce": lambda cfg: nn.BCEWithLogitsLoss(pos_weight=torch.tensor([cfg["pos_weight"]])),
    "focal": lambda cfg: FocalLoss(gamma=cfg["focal_gamma"], use_softmax=False),
    "tversky": lambda cfg: TverskyLoss(sigmoid=True, alpha=cfg["tversky_alpha"], beta=cfg["tversky_beta"],
                                       batch=True),
    "focal_tversky": lambda cfg: FocalTversky(cfg["tversky_alpha"], cfg["tversky_beta"], cfg["focal_gamma"]),
    # over the whole batch, like the losses above (batch=True); smp's Jaccard gives 0 to a batch without foreground
    "jaccard": lambda cfg: JaccardLoss(mode="binary", from_logits=True),
    "lovasz": lambda cfg: LovaszLoss(mode="binary", per_image=False, from_logits=True),
}
LOSS_TYPES: tuple[str, ...] = tuple(BUILDERS)  # the allowed values of `loss.type`
LOSS_PARAMS = {  # the schema of the `loss` params section
    "type": Spec(str, LOSS_TYPES),
    "pos_weight": num(0, 10_000),
    "tversky_alpha": num(0, 1),
    "tversky_beta": num(0, 1),
    "focal_gamma": num(0, 10),
}


def build_loss(cfg: dict[str, Any]) -> nn.Module:
    """The loss for logits N x 1 x H x W against {0,1} float targets of the same shape."""
    kind = cfg["type"]
    if kind not in BUILDERS:
        raise MedsegError(f"params.yaml: loss.type={kind!r} is not allowed; choose one of: {', '.join(LOSS_TYPES)}")
    return BUILDERS[kind](cfg)
