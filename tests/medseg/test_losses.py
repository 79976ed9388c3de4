import pytest
import torch

from medseg.errors import MedsegError
from medseg.losses import build_loss
from medseg.losses import LOSS_TYPES

CFG = {"pos_weight": 5.0, "tversky_alpha": 0.3, "tversky_beta": 0.7, "focal_gamma": 2.0}


@pytest.mark.parametrize("kind", LOSS_TYPES)
def test_loss_ranks_good_prediction_below_bad(kind):
    torch.manual_seed(0)
    target = (torch.rand(4, 1, 16, 16) < 0.1).float()
    good = (target * 2 - 1) * 6.0  # confident and right
    bad = -good
    loss = build_loss({"type": kind, **CFG})
    lg, lb = loss(good, target), loss(bad, target)
    assert torch.isfinite(lg) and torch.isfinite(lb)
    assert lg.item() < 0.1 * lb.item()
    logits = torch.zeros_like(target, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_unknown_loss_is_rejected_by_name():
    with pytest.raises(MedsegError, match="loss.type='nonsense'"):
        build_loss({"type": "nonsense", **CFG})
