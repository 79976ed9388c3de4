"""The weight EMA: torch's AveragedModel numbers, its state_dict, and no read of the device counter per step."""
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medseg.ema import EMA


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def steps(model: nn.Module, averages: list[nn.Module], count: int) -> None:
    """`count` SGD steps of `model` (BatchNorm statistics moving too), each followed by an update of every average."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        x = torch.randn(3, 2, 8, 8, generator=generator)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        for average in averages:
            average.update_parameters(model)


def test_the_ema_is_torchs_average_to_the_bit_buffers_included():
    model = network()
    ours, theirs = EMA(model, 0.9), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    steps(model, [ours, theirs], 7)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)  # the same keys: a last.pt of either resumes in the other
    for key, value in reference.items():
        assert torch.equal(mine[key], value), key
    assert int(mine["n_averaged"]) == 7 and ours.steps == 7
    assert not torch.equal(mine["module.1.running_mean"], model[1].running_mean)  # averaged, not copied


def test_a_resumed_ema_goes_on_as_if_never_stopped():
    model = network()
    whole = EMA(model, 0.8)
    steps(model, [whole], 3)
    resumed = EMA(network(), 0.8)
    resumed.load_state_dict(whole.state_dict())
    assert resumed.steps == 3  # the host count comes back from the saved counter
    steps(model, [whole, resumed], 2)
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_an_update_never_reads_the_device_counter(monkeypatch):
    """AveragedModel turns its counter into a Python bool every step (a host sync on a GPU); EMA must not."""
    model = network()
    ours, theirs = EMA(model, 0.9), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    steps(model, [ours, theirs], 1)

    def read(self, *args):
        raise AssertionError("a tensor was read on the host")

    monkeypatch.setattr(torch.Tensor, "__bool__", read)
    steps(model, [ours], 2)
    with pytest.raises(AssertionError, match="read on the host"):
        theirs.update_parameters(model)
