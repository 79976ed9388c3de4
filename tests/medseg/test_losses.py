import pytest
import torch

from medseg.errors import MedsegError
from medseg.losses import LOSS_TYPES, LossParams, build_loss

CFG = {"pos_weight": 5.0, "tversky_alpha": 0.3, "tversky_beta": 0.7, "focal_gamma": 2.0}


@pytest.mark.parametrize("kind", LOSS_TYPES)
def test_loss_ranks_good_prediction_below_bad(kind):
    torch.manual_seed(0)
    target = (torch.rand(4, 1, 16, 16) < 0.1).float()
    good = (target * 2 - 1) * 6.0  # confident and right
    bad = -good
    loss = build_loss(LossParams(type=kind, **CFG))
    lg, lb = loss(good, target), loss(bad, target)
    assert torch.isfinite(lg) and torch.isfinite(lb)
    assert lg.item() < 0.1 * lb.item()
    logits = torch.zeros_like(target, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_unknown_loss_is_rejected_by_name():
    with pytest.raises(MedsegError, match="loss.type='nonsense'"):
        build_loss(LossParams(type="nonsense", **CFG))


def test_jaccard_is_one_minus_soft_iou_of_the_batch():
    """Logits 0 put p = 0.5 on every pixel: soft IoU = 0.5k / (0.5n + k - 0.5k) = k / (n + k) over the batch."""
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1  # k = 4 of n = 32 pixels
    loss = build_loss(LossParams(type="jaccard", **CFG))
    assert loss(torch.zeros_like(target), target).item() == pytest.approx(1 - 4 / 36)
    assert loss((target * 2 - 1) * 20, target).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5])
def test_lovasz_hinge_of_a_uniform_margin(margin):
    """Every pixel on the right side by `margin` < 1 has hinge error 1 - margin, and the Lovasz extension
    of the Jaccard loss weighs equal errors by the loss of getting all of them wrong, 1: loss = 1 - margin."""
    target = torch.zeros(2, 1, 4, 4)
    target[1, 0, 1:3, :] = 1
    loss = build_loss(LossParams(type="lovasz", **CFG))
    assert loss((target * 2 - 1) * margin, target).item() == pytest.approx(1 - margin)
    assert loss((target * 2 - 1) * 3, target).item() == 0.0  # a margin of 1 or more costs nothing
