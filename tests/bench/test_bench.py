"""`make bench`: the ratios it reports, and its core on a toy setting (1 warm-up + 1 timed step)."""
import math

import numpy as np
import pytest
import torch

from torch.utils.data import DataLoader

from bench.loops import Setting, TimedLoader, bf16_peak, matmul_ceiling, write_pngs
from bench.run import Context, bench_setting, default_models, efficiency, summarize, table
from models import build_model
from medseg.losses import LossParams
from medseg.params import AugmentParams, TrainParams
from tests.conftest import shipped



def model(ours: float, naive: float, step: float) -> dict:
    return {"ours_ips": ours, "naive_ips": naive, "step_ips": step}


def test_summarize_ratios_and_minima():
    settings = {"default": {"data_ips": 100.0, "models": {"a": model(30, 10, 50), "b": model(8, 4, 20)}},
                "real": {"data_ips": 10.0, "models": {"a": model(1, 10, 1)}}}  # not part of the headline
    out = summarize(settings)
    assert settings["default"]["models"]["a"]["speedup"] == pytest.approx(3.0)
    assert settings["default"]["models"]["b"]["loader_headroom"] == pytest.approx(5.0)
    assert settings["real"]["models"]["a"]["speedup"] == pytest.approx(0.1)
    assert out["train_speedup"] == pytest.approx(2.0)  # min(3, 2): the real setting does not count
    assert out["loader_headroom"] == pytest.approx(2.0)  # min(100/50, 100/20)
    assert out["loader_headroom_by_model"] == pytest.approx({"a": 2.0, "b": 5.0})


def test_timed_loader_times_only_after_warmup():
    timed = TimedLoader(range(5), 5, warmup=2)
    assert len(timed) == 5 and list(timed) == [0, 1, 2, 3, 4]
    assert timed.started > 0 and timed.images_per_s(batch=4) > 0


def test_the_clock_starts_after_the_prefetched_batches_are_drained():
    """With 2 workers prefetching 2 batches each, the 4 batches ready when the warm-up ends are not timed."""
    loader = DataLoader(range(40), batch_size=4, num_workers=2)
    timed = TimedLoader(loader, 5, warmup=2)
    assert (timed.n_batches, timed.warmup) == (9, 6)  # 5 - 2 = 3 timed batches either way
    assert len(list(timed)) == 9 and timed.started > 0
    plain = TimedLoader(range(5), 5, warmup=2)
    assert (plain.n_batches, plain.warmup) == (5, 2)


def test_the_cpu_ceiling_is_a_measured_matmul_rate():
    rate = matmul_ceiling(torch.device("cpu"), None, seconds=0.05)
    assert 1e8 < rate < 1e14  # FLOP/s of fp32 products: from an old laptop core to far above any 2-core CPU


def test_bf16_peak_by_device_name():
    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989e12 and bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12 and bf16_peak("NVIDIA GeForce RTX 3060") is None


def finite_positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_core_on_a_toy_setting(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    masks = (rng.random((8, 32, 32)) > 0.8).astype(np.uint8)
    setting = Setting("default", {"unet": {"width": 4}}, images, masks, write_pngs(images, masks, tmp_path),
                      tmp_path, images[:4], batch=4)
    ctx = Context(shipped(TrainParams, workers=0), shipped(LossParams), shipped(AugmentParams), torch.device("cpu"), None)
    settings = {"default": bench_setting(setting, ctx, warmup=1, steps=1)}
    result = {**summarize(settings), "settings": settings, "convert_slices_per_s": 1.0,
              "memory": {"peak_rss_mb": 1.0}, "machine": {}}
    unet = settings["default"]["models"]["unet"]
    for key in ("ours_ips", "naive_ips", "step_ips", "infer_ips", "speedup", "loader_headroom"):
        assert finite_positive(unet[key]), key
    assert unet["layout"] in ("nchw", "channels_last")
    assert unet["ours_ips"] == max(unet["ours_ips_by_layout"].values())
    assert finite_positive(settings["default"]["data_ips"])
    assert finite_positive(result["train_speedup"]) and finite_positive(result["loader_headroom"])
    efficiency(settings["default"], setting, ctx, ceiling=1e11)
    assert unet["flops_per_image"] > 0 and unet["flops_per_image"] % 3 == 0  # 3 x the forward's
    assert unet["ceiling_share"] == pytest.approx(unet["flops_per_image"] * unet["ours_ips"] / 1e11)
    assert "| default | unet |" in table(result)


def test_the_default_models_are_built_from_params_yaml():
    """`make bench` builds every network from params.yaml's typed sections (a typed section passed
    as keyword arguments once crashed it before the first step)."""
    for name, params in default_models().items():
        assert isinstance(params, dict)
        net = build_model(name, 3, **params).eval()
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32), name
