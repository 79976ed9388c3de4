"""Loss factory keyed by `loss.type`; MONAI losses where they exist, segmentation-models-pytorch's
for the IoU losses MONAI lacks (soft Jaccard, Lovász hinge).

Hand-written: balanced_ce (each image's foreground and background weighted by half their area share) and the focal exponent on
MONAI's Tversky loss, which MONAI does not provide for the binary sigmoid case; for overlapping
regions, the sum of MONAI's sigmoid Dice and a per-channel BCE (MONAI's DiceCELoss switches to a
softmax cross-entropy as soon as there is more than one channel).

Several classes (medseg.classes) take `dice_bce`, `dice` or `bce`: exclusive classes as softmax
over background + classes (Dice over the classes only: the background would swamp it when the
foreground is small), regions as one sigmoid channel each. The targets are the slice store's codes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from segmentation_models_pytorch.losses import JaccardLoss, LovaszLoss
from torch import nn

from medseg.classes import BINARY, Classes
from medseg.errors import MedsegError
from medseg.params import Section, Spec, key, num


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


BUILDERS: dict[str, Callable[[LossParams], nn.Module]] = {
    "dice": lambda cfg: DiceLoss(sigmoid=True, batch=True),
    "bce": lambda cfg: nn.BCEWithLogitsLoss(),
    "dice_bce": lambda cfg: DiceCELoss(sigmoid=True, batch=True),
    "balanced_ce": lambda cfg: BalancedBCE(),
    "weighted_ce": lambda cfg: nn.BCEWithLogitsLoss(pos_weight=torch.tensor([cfg.pos_weight])),
    "focal": lambda cfg: FocalLoss(gamma=cfg.focal_gamma, use_softmax=False),
    "tversky": lambda cfg: TverskyLoss(sigmoid=True, alpha=cfg.tversky_alpha, beta=cfg.tversky_beta,
                                       batch=True),
    "focal_tversky": lambda cfg: FocalTversky(cfg.tversky_alpha, cfg.tversky_beta, cfg.focal_gamma),
    # over the whole batch, like the losses above (batch=True); smp's Jaccard gives 0 to a batch without foreground
    "jaccard": lambda cfg: JaccardLoss(mode="binary", from_logits=True),
    "lovasz": lambda cfg: LovaszLoss(mode="binary", per_image=False, from_logits=True),
}
LOSS_TYPES: tuple[str, ...] = tuple(BUILDERS)  # the allowed values of `loss.type`


@dataclass(frozen=True)
class LossParams(Section):
    """The `loss` params section; its rules live here, beside the losses they configure."""

    NAME: ClassVar[str] = "loss"
    type: str = key(Spec(str, LOSS_TYPES), "the loss; several classes take dice_bce, dice or bce")
    pos_weight: float = key(num(0, 10_000), "foreground weight of weighted_ce")
    tversky_alpha: float = key(num(0, 1), "false-positive weight of tversky and focal_tversky")
    tversky_beta: float = key(num(0, 1), "false-negative weight of tversky and focal_tversky")
    focal_gamma: float = key(num(0, 10), "exponent of focal; focal_tversky raises its loss to 1 / focal_gamma")

    def check(self) -> None:
        """The loss weights that would train nothing or divide by zero, for the loss types that use them."""
        kind = self.type
        if kind == "weighted_ce" and self.pos_weight <= 0:
            raise MedsegError(f"params.yaml: loss.pos_weight={self.pos_weight!r} must be > 0 with "
                              "loss.type=weighted_ce (0 ignores every foreground pixel)")
        if kind in ("tversky", "focal_tversky") and self.tversky_alpha + self.tversky_beta <= 0:
            raise MedsegError(f"params.yaml: loss.tversky_alpha + loss.tversky_beta must be > 0 with loss.type={kind} "
                              "(both 0 make the loss constant)")
        if kind == "focal_tversky" and self.focal_gamma <= 0:
            raise MedsegError(f"params.yaml: loss.focal_gamma={self.focal_gamma!r} must be > 0 with "
                              "loss.type=focal_tversky (its exponent is 1 / focal_gamma)")


class ExclusiveLoss(nn.Module):
    """Softmax losses over background + K classes against N x 1 x H x W class-index codes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        ce = self.ce(logits, codes[:, 0].long()) if self.kind != "dice" else 0
        return (self.dice(logits, codes) if self.kind != "bce" else 0) + ce


class RegionLoss(nn.Module):
    """Sigmoid Dice and/or BCE per region channel against N x 1 x H x W bit codes (bit k: region k)."""

    def __init__(self, kind: str, regions: int) -> None:
        super().__init__()
        self.kind, self.regions = kind, regions
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        target = region_targets(codes, self.regions)
        return ((self.dice(logits, target) if self.kind != "bce" else 0)
                + (self.bce(logits, target) if self.kind != "dice" else 0))


def region_targets(codes: torch.Tensor, regions: int) -> torch.Tensor:
    """N x 1 x H x W bit codes -> N x regions x H x W float {0, 1}."""
    bits = torch.arange(regions, device=codes.device).view(1, regions, 1, 1)
    return ((codes.long() >> bits) & 1).float()


MULTI_CLASS_TYPES = ("dice_bce", "dice", "bce")


def build_loss(cfg: LossParams, classes: Classes = BINARY) -> nn.Module:
    """The loss for logits N x C x H x W against the slice store's codes as N x 1 x H x W floats
    (binary: C = 1 and the codes are the {0, 1} target)."""
    kind = cfg.type
    if kind not in BUILDERS:
        raise MedsegError(f"params.yaml: loss.type={kind!r} is not allowed; choose one of: {', '.join(LOSS_TYPES)}")
    if not classes.multi:
        return BUILDERS[kind](cfg)
    if kind not in MULTI_CLASS_TYPES:
        raise MedsegError(f"params.yaml: loss.type={kind!r} takes one foreground; with dataset.classes choose one of: "
                          f"{', '.join(MULTI_CLASS_TYPES)}")
    return ExclusiveLoss(kind) if classes.mode == "exclusive" else RegionLoss(kind, len(classes.names))
