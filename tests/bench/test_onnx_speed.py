"""The ONNX row of `make bench` on a toy setting: both rates measured, their ratio, the parity check."""
import math

import numpy as np
import pytest

from bench.onnx_speed import onnx_vs_torch, table
from tests.tiny_models import PRE


def test_onnx_row_on_a_toy_setting():
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    result = onnx_vs_torch({"unet": {"width": 4}}, images, PRE, batch=4, rounds=1)
    unet = result["models"]["unet"]
    assert all(math.isfinite(unet[k]) and unet[k] > 0 for k in ("ort_ips", "torch_ips"))
    assert unet["ort_over_torch"] == pytest.approx(unet["ort_ips"] / unet["torch_ips"])
    assert unet["max_abs_diff"] <= 1e-4
    assert result["images"] == 8 and result["size"] == [32, 32] and result["torch_dtype"] == "fp32"
    assert "| unet |" in table(result) and result["cpu"] in table(result)
