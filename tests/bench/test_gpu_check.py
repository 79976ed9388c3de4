"""bench.gpu_check: the one GPU-machine command runs its whole path on a CPU in --quick and reports
every figure it promises."""
import math

from bench.gpu_check import check


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_the_quick_check_reports_every_row(tmp_path):
    result = check(quick=True, folder=tmp_path)
    assert [row["model"] for row in result["train"]] == ["unet", "attn_unet", "deeplab", "upernet"]
    for row in result["train"]:
        assert positive(row["images_per_s"]) and row["flops_per_image"] > 0 and positive(row["ceiling_share"])
        assert row["ceiling_share"] == row["flops_per_image"] * row["images_per_s"] / result["ceiling"]["flops"]
    assert positive(result["data_path_images_per_s"])
    epoch = result["epoch"]
    assert epoch["epochs"] == 3 and epoch["wall_seconds_per_epoch"] > epoch["train_seconds_per_epoch"] > 0
    assert positive(epoch["overhead_seconds_per_epoch"]) and positive(result["inference_512"]["peak_mb"])
    assert "matmul" in result["ceiling"]["source"]  # a CPU: its measured ceiling, not a card's peak
