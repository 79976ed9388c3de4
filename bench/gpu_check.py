"""`python -m bench.gpu_check`: one command that checks a GPU machine in a few minutes and writes one
JSON (results/gpu_check.json): what the moonshot (docs/how-to/gpus-and-ddp.md) needs to know.

- the moonshot's training rows: the four paper-size models (U-Net and Attention U-Net width 64,
  DeepLabv3+ and UPerNet on ResNet-50) at 256 px, 3 channels, batch 64, the autocast dtype `auto`
  picks, channels_last, eager and compiled (`train.compile`), fed by the device data path; each with
  its FLOPs per image (3 x the forward's) and its share of the ceiling (the card's bf16 peak, or a
  CPU's measured matmul rate); and the device data path alone;
- the per-epoch overhead of medseg.training.train (validation, last.pt, the image grid) against the
  training epoch itself, for U-Net-64 at 256 px;
- the peak device memory (host RSS on a CPU) of inference at 512 px with U-Net-64, as evaluate runs it.

`--quick` shrinks everything (32 px, batch 2, width 8, eager only) so CI runs the same code on a CPU.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import loops
from bench.run import Context, ceiling
from medseg import paths
from medseg.cli import run_stage
from medseg.device_data import DeviceFeed
from medseg.hardware import amp_name, device_name, peak_memory_mb, pick_amp_dtype, pick_device
from medseg.inference import forward_flops, predict_probs
from medseg.losses import LossParams
from medseg.model_card import Header
from medseg.outputs import write_json
from medseg.params import AugmentParams, TrainParams
from medseg.training import Recipe, RunDirs, TrainData, build_run, compiled, train, train_epoch
from models import build_model

log = logging.getLogger("medseg.gpu_check")
OUT = paths.BENCH_JSON.with_name("gpu_check.json")
MOONSHOT = {"unet": {"width": 64}, "attn_unet": {"width": 64},
            "deeplab": {"encoder": "resnet50", "decoder_channels": 256, "pretrained": False},
            "upernet": {"encoder": "resnet50", "decoder_channels": 256, "pretrained": False}}
QUICK = {"unet": {"width": 8}, "attn_unet": {"width": 8},
         "deeplab": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
         "upernet": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False}}


def synthetic(count: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 slices with a bright disc as the foreground of each (shapes the loss can learn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([((yy - rng.integers(size // 4, 3 * size // 4)) ** 2 + (xx - rng.integers(size // 4, 3 * size // 4)) ** 2
                       < (size // 8) ** 2) for _ in range(count)]).astype(np.uint8)
    images = (rng.integers(0, 80, (count, size, size, channels)) + masks[..., None] * 120).astype(np.uint8)
    return images, masks


def draws(images: np.ndarray, masks: np.ndarray, count: int) -> TrainData:
    """The slices as training data drawn `count` times an epoch in all (each about equally often)."""
    repeats = np.bincount(np.arange(count) % len(images), minlength=len(images))
    return TrainData(images, masks, repeats, images[:1], masks[:1])


def train_row(name: str, params: dict[str, Any], size: int, batch: int, steps: int, ctx: Context, mode: str) -> dict:
    """images/s of medseg's training step for one model, fed by the device data path."""
    images, masks = synthetic(4 * batch, size, 3)
    cfg = ctx.cfg.with_values(batch_size=batch, compile=mode, channels_last="auto", data_path="device")
    torch.manual_seed(0)
    run = build_run(build_model(name, 3, **params), Header(name, params, 3, {}), Recipe(cfg, ctx.loss_cfg, ctx.aug_cfg))
    run.model = compiled(run.core, mode)
    warmup = 3 if mode != "off" else 2  # a compiled step's first calls compile
    feed = DeviceFeed(draws(images, masks, (warmup + steps) * batch), ctx.aug_cfg, batch, ctx.device)
    timed = loops.TimedLoader(feed, warmup + steps, warmup)
    started = time.perf_counter()
    train_epoch(run, timed)
    rate = timed.images_per_s(batch)
    per_image = 3 * forward_flops(run.core, 3, size, ctx.device)
    return {"model": name, "compile": mode, "images_per_s": rate, "flops_per_image": per_image,
            "tflops": per_image * rate / 1e12, "seconds": time.perf_counter() - started}


def data_path_rate(size: int, batch: int, steps: int, ctx: Context) -> float:
    """images/s of the device data path alone (draw, augment), no model."""
    images, masks = synthetic(4 * batch, size, 3)
    feed = DeviceFeed(draws(images, masks, (steps + 1) * batch), ctx.aug_cfg, batch, ctx.device)
    timed = loops.TimedLoader(feed, steps + 1, 1)
    for _ in timed:
        pass
    return timed.images_per_s(batch)


def epoch_overhead(params: dict[str, Any], size: int, batch: int, draws: int, ctx: Context, folder: Path) -> dict:
    """Wall seconds per epoch of train() against its training seconds, over 3 epochs: what validation,
    last.pt and the image grid cost per epoch."""
    images, masks = synthetic(draws + draws // 4, size, 3)
    data = TrainData(images[:draws], masks[:draws], np.ones(draws, np.int64), images[draws:], masks[draws:])
    cfg = ctx.cfg.with_values(batch_size=batch, epochs=3, patience=0, data_path="device")
    torch.manual_seed(0)
    started = time.perf_counter()
    state = train(build_model("unet", 3, **params), Header("unet", params, 3, {"size": size, "channels": 3}), data,
                  Recipe(cfg, ctx.loss_cfg, ctx.aug_cfg), RunDirs(folder / "models", folder / "live"))
    wall = time.perf_counter() - started
    return {"epochs": state.epoch, "train_seconds_per_epoch": state.train_seconds / state.epoch,
            "wall_seconds_per_epoch": wall / state.epoch, "overhead_seconds_per_epoch": (wall - state.train_seconds) / state.epoch,
            "draws_per_epoch": draws, "val_slices": len(data.val_images)}


def inference_memory(params: dict[str, Any], size: int, count: int, batch: int, ctx: Context) -> dict:
    """Peak memory of predict_probs (evaluate's inference) over `count` slices at `size` px."""
    images, _ = synthetic(count, size, 3)
    model = build_model("unet", 3, **params).to(ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    predict_probs(model, images, ctx.device, batch, ctx.amp)
    return {"size": size, "slices": count, "batch": batch, "peak_mb": peak_memory_mb(ctx.device),
            "probabilities_mb": count * size * size * 4 / 2**20}


def check(quick: bool, folder: Path, out: Path | None = None, budget_s: float = 420.0) -> dict[str, Any]:
    """Eager rows, the data path, the epoch overhead and inference memory first, then the compiled rows
    while `budget_s` lasts (compilation is the slow, unpredictable part): a lease that ends early still
    leaves every figure but the compiled ones, written to `out` after each phase."""
    started = time.perf_counter()
    device = pick_device("auto")
    amp = pick_amp_dtype("auto", device)
    cfg = TrainParams.load().with_values(device=device.type, amp="auto", workers=0)
    ctx = Context(cfg, LossParams.load(), AugmentParams.load(), device, amp)
    models, size, batch, steps = (QUICK, 32, 2, 1) if quick else (MOONSHOT, 256, 64, 20)
    unet = models["unet"]
    top = ceiling(ctx)
    if device.type == "cuda":  # the datasheet peak beside what this card's matmul really reaches
        top["measured_8192_matmul_flops"] = loops.matmul_ceiling(device, amp, n=8192)
    result: dict[str, Any] = {"machine": {"device": device_name(device), "amp": amp_name(amp), "torch": torch.__version__},
                              "ceiling": top, "train": []}

    def add_rows(mode: str) -> None:
        for name, params in models.items():
            if mode != "off" and time.perf_counter() - started > budget_s:
                result["train"].append({"model": name, "compile": mode, "skipped": f"past the {budget_s:.0f} s budget"})
                continue
            row = train_row(name, params, size, batch, steps, ctx, mode)
            row["ceiling_share"] = row["flops_per_image"] * row["images_per_s"] / top["flops"]
            log.info("%s", row)
            result["train"].append(row)
            save()

    def save() -> None:
        if out is not None:
            write_json(out, result)

    add_rows("off")
    result["data_path_images_per_s"] = data_path_rate(size, batch, steps, ctx)
    result["epoch"] = epoch_overhead(unet, size, batch, 4 * batch if quick else 2_048, ctx, folder)
    result["inference_512"] = inference_memory(unet, 64 if quick else 512, 8 if quick else 512, 2 if quick else 16, ctx)
    log.info("data path %.0f img/s; epoch %s; inference %s", result["data_path_images_per_s"], result["epoch"],
             result["inference_512"])
    save()
    if not quick and device.type == "cuda":
        add_rows("default")
    result["seconds"] = time.perf_counter() - started
    save()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the same code on a CPU in seconds")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which compiled rows are skipped (marked so in the JSON)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        check(args.quick, Path(tmp), args.out, args.budget)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main)
