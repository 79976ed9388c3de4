"""The CUDA branches of training, DDP and inference, reached on a CPU: torch.cuda is faked (see
test_hardware.fake_gpu) and process-group set-up is stubbed, so each branch's decisions are
checked without a GPU; the work itself runs on the CPU."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import medseg.distributed as distributed
import medseg.hardware as hardware
import medseg.training as training
from medseg.model_card import Header, save_checkpoint
from medseg.distributed import DistInfo
from medseg.inference import predict_probs
from medseg.torchdata import SliceDataset
from medseg.resume import resume_from
from medseg.training import TrainData, make_loader
from medseg.losses import LossParams
from medseg.params import AugmentParams, TrainParams
from tests.conftest import shipped
from tests.medseg.test_hardware import fake_gpu


def test_torchrun_on_gpus_joins_nccl_and_drives_the_local_rank(monkeypatch):
    fake_gpu(monkeypatch, (9, 0), count=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls: dict = {}
    joined = {"done": False}
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", i))

    def init_process_group(backend, **kwargs):
        calls["backend"], calls["kwargs"] = backend, kwargs
        joined["done"] = True

    monkeypatch.setattr(distributed.dist, "init_process_group", init_process_group)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: joined["done"])
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: calls["backend"])
    info = distributed.init_distributed("auto")
    assert calls["backend"] == "nccl" and calls["set_device"] == 1
    assert calls["kwargs"]["device_id"] == torch.device("cuda", 1)
    assert info == DistInfo(rank=1, local_rank=1, world_size=2) and not info.is_main
    device = distributed.local_device(torch.device("cuda"), info)
    assert device == torch.device("cuda", 1)

    class RecordingDDP(nn.Module):
        def __init__(self, module, device_ids=None):
            super().__init__()
            self.module, self.device_ids = module, device_ids

    monkeypatch.setattr(distributed, "DistributedDataParallel", RecordingDDP)
    wrapped = distributed.wrap(nn.Conv2d(1, 1, 1), device, info)
    assert wrapped.device_ids == [1]  # one GPU per process, the LOCAL_RANK's
    assert distributed.unwrap(wrapped) is wrapped.module


def test_the_gpu_loader_pins_memory_and_prepares_batches_in_workers(monkeypatch):
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 8)
    images, masks = np.zeros((4, 8, 8, 1), np.uint8), np.zeros((4, 8, 8), np.uint8)
    dataset = SliceDataset(images, masks, np.arange(4), None)
    cfg = shipped(TrainParams, batch_size=2, workers="auto", seed=0)
    gpu = make_loader(dataset, cfg, torch.device("cuda"), DistInfo())
    assert gpu.pin_memory and gpu.num_workers == 4 and gpu.persistent_workers  # forked once per run, not per epoch
    cpu = make_loader(dataset, cfg, torch.device("cpu"), DistInfo())
    assert not cpu.pin_memory and cpu.num_workers == 0


class BatchRecorder(nn.Module):
    """A 1x1 conv that remembers the largest batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.largest = nn.Conv2d(1, 1, 1), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, len(x))
        return self.conv(x)


def test_inference_and_the_val_loss_hold_one_batch_at_a_time():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (37, 16, 16, 1), dtype=np.uint8)
    masks = (images[..., 0] > 128).astype(np.uint8)
    model = BatchRecorder()
    probs = predict_probs(model, images, torch.device("cpu"), batch_size=5)
    assert model.largest == 5 and probs.shape == (37, 16, 16)
    model.largest = 0
    whole = predict_probs(model, images, torch.device("cpu"), batch_size=37)
    assert np.allclose(probs, whole, atol=1e-6)
    data = TrainData(images, masks, np.ones(37, np.int64), images, masks)
    model.largest = 0
    recipe = training.Recipe(shipped(TrainParams, batch_size=8, threshold=0.5, device="cpu", amp="off"),
                             shipped(LossParams, type="bce"), shipped(AugmentParams))
    run = training.build_run(model, Header("unet", {}, 1, {}), recipe)
    loss, _, _ = training._validate(run, data, np.arange(4))
    assert model.largest == 8
    with torch.no_grad():  # per-pixel mean BCE: the batch-size-weighted mean of batch means is the global mean
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        expected = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(masks[:, None]).float())
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_a_last_pt_made_under_another_dtype_starts_over_and_says_why(tmp_path, caplog):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    state = {"epoch": 1, "best_dice": 0.1, "best_epoch": 1, "bad_epochs": 0, "finished": False, "train_seconds": 1.0}
    common = {"model": "unet", "model_params": {}, "in_channels": 1, "state_dict": {}, "optimizer": {},
              "scheduler": {}, "scaler": {}, "ema": {}}
    save_checkpoint(last, {**common, "fingerprint": "made-on-an-a100", "amp": "bfloat16", "train_state": state})
    save_checkpoint(best, common)
    with caplog.at_level(logging.INFO, logger="medseg.train"):
        assert resume_from(last, best, "this-run", "float16", None) is None
    assert "made under bfloat16 and this run resolves train.amp to float16; starting over" in caplog.text
    caplog.clear()
    save_checkpoint(last, {**common, "fingerprint": "other-params", "amp": "float16", "train_state": state})
    with caplog.at_level(logging.INFO, logger="medseg.train"):
        assert resume_from(last, best, "this-run", "float16", None) is None
    assert "the params or the data changed" in caplog.text


@pytest.mark.parametrize("device, world, batch, expected", [
    ("cpu", 1, 16, (False, False, 1, 1)),
    ("cpu", 2, 4, (False, False, 1, 1)),  # gloo DDP on CPU: no SyncBatchNorm
    ("cuda", 1, 4, (True, False, 5, 5)),
    ("cuda", 2, 8, (True, True, 5, 5)),  # small per-GPU batches: BatchNorm statistics synced
    ("cuda", 2, 32, (True, False, 5, 5)),
])
def test_the_card_keys_resolve_their_auto_per_device(device, world, batch, expected):
    cfg = shipped(TrainParams, batch_size=batch, workers=0, channels_last="auto", sync_bn="auto",
                  checkpoint_every="auto", image_every="auto")
    got = training.for_device(cfg, torch.device(device), world)
    assert (got.channels_last, got.sync_bn, got.checkpoint_every, got.image_every) == expected
    explicit = training.for_device(cfg.with_values(channels_last=False, sync_bn=True, checkpoint_every=2),
                                   torch.device(device), world)
    assert (explicit.channels_last, explicit.sync_bn, explicit.checkpoint_every) == (False, True, 2)


def test_adamw_is_fused_on_cuda_and_the_cpu_keeps_the_default_kernel():
    cfg = shipped(TrainParams, optimizer="adamw")
    assert training.make_optimizer(nn.Linear(2, 1), cfg, torch.device("cuda")).defaults["fused"] is True
    assert not training.make_optimizer(nn.Linear(2, 1), cfg, torch.device("cpu")).defaults["fused"]


def test_compile_wraps_the_trained_network_and_checkpoints_keep_plain_keys(monkeypatch):
    modes = []

    def fake_compile(model, mode=None):
        modes.append(mode)
        return torch._dynamo.eval_frame.OptimizedModule(model, lambda *a, **k: None)

    monkeypatch.setattr(training.torch, "compile", fake_compile)
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert training.compiled(network, "off") is network and modes == []
    wrapped = training.compiled(network, "max-autotune")
    assert modes == ["max-autotune"] and wrapped._orig_mod is network
    assert set(network.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                         "1.running_var", "1.num_batches_tracked"}  # what best.pt and last.pt save


def test_sync_bn_converts_the_network_without_renaming_its_state():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    keys = list(network.state_dict())
    recipe = training.Recipe(shipped(TrainParams, sync_bn=True, device="cpu", amp="off"), shipped(LossParams),
                             shipped(AugmentParams))
    run = training.build_run(network, Header("unet", {}, 1, {}), recipe)
    assert isinstance(run.core[1], nn.SyncBatchNorm) and list(run.core.state_dict()) == keys
