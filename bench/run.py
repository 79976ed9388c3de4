"""`make bench`: how fast our training loop is on this machine, against the naive loop it replaces.

Ours is the real `medseg.training.train_epoch` over a DataLoader on slices decoded once
(SliceDataset), with the amp `pick_amp_dtype('auto')` picks, NCHW or channels_last (both timed,
the faster kept) and `train.workers` loader workers. The naive loop is what the seed scripts do:
decode both PNGs with cv2 in every `__getitem__`, 4 workers, fp32, NCHW, no AMP. Both train the
same model with the same batch, AdamW, loss and augmentation, so their ratio is what the
pipeline's engineering buys. Also timed: our data path alone and the train step alone (their
ratio, the loader headroom, says whether the model waits for data), predict_probs, the convert
stage, peak memory; on a GPU, U-Net width 64 at 512 px in bf16 and its share of the bf16 peak.
The ONNX row (bench/onnx_speed.py): predict with onnxruntime against PyTorch fp32 on the CPU.

Settings: `default` (params.yaml models and batch on data/slices) and `real` (paper-width
models, 256 px, 3 channels, batch 8, the default slices upsampled). Writes results/bench.json
and prints a markdown table; `--quick` is a smoke test (1 warm-up + 1 timed step, default only).
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bench import loops, onnx_speed
from bench.loops import Setting
from medseg.cli import run_stage
from medseg.hardware import amp_name, device_name, pick_amp_dtype, pick_device
from medseg.inference import forward_flops
from medseg.outputs import write_json
from medseg import paths, plans
from medseg.losses import LossParams
from medseg.networks import load_model_params
from medseg.params import AugmentParams, ConvertParams, TrainParams
from medseg.slices import dataset_info, load_arrays, read_sampling, split_rows
from models import MODEL_NAMES, build_model

log = logging.getLogger("medseg.bench")
SLICES, RAW, OUT = paths.SLICES, paths.raw_dir("phantom"), paths.BENCH_JSON
LAYOUTS = {"nchw": torch.preserve_format, "channels_last": torch.channels_last}
REAL_MODELS = {"unet": {"width": 64}, "attn_unet": {"width": 64},
               "deeplab": {"encoder": "resnet50", "decoder_channels": 256, "pretrained": False},
               "upernet": {"encoder": "tu-convnext_tiny", "decoder_channels": 256, "pretrained": False}}


@dataclass
class Context:
    cfg: TrainParams
    loss_cfg: LossParams
    aug_cfg: AugmentParams
    device: torch.device
    amp: torch.dtype | None


def bench_model(name: str, params: dict[str, Any], s: Setting, ctx: Context, warmup: int, steps: int) -> dict:
    """Our loop in both layouts, the train step alone, the naive loop, inference: one model."""
    n = warmup + steps
    cfg = replace(ctx.cfg, batch_size=s.batch)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(name, s.images.shape[3], **params)

    def ours(batches: Any, fmt: torch.memory_format) -> float:
        return loops.train_ours(fresh(), batches, n, warmup, s.batch, cfg, ctx.loss_cfg, ctx.device, ctx.amp, fmt)

    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    by_layout = {k: ours(loops.our_loader(s, cfg, ctx.aug_cfg, n, ctx.device), f) for k, f in LAYOUTS.items()}
    layout = max(by_layout, key=by_layout.get)
    fixed = next(iter(loops.our_loader(s, cfg, ctx.aug_cfg, 1, ctx.device)))
    out = {"ours_ips": by_layout[layout], "layout": layout, "ours_ips_by_layout": by_layout,
           "step_ips": ours([fixed] * n, LAYOUTS[layout]),
           "naive_ips": loops.train_naive(fresh(), s, n, warmup, cfg, ctx.loss_cfg, ctx.aug_cfg, ctx.device)}
    if s.test_images is not None:
        out["infer_ips"] = loops.inference(fresh(), s.test_images, ctx.device, s.batch, ctx.amp, LAYOUTS[layout])
    if ctx.device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    log.info("%s/%s: %s", s.name, name, {k: v for k, v in out.items() if k != "ours_ips_by_layout"})
    return out


def bench_setting(s: Setting, ctx: Context, warmup: int, steps: int) -> dict:
    n = warmup + steps
    data_ips = loops.data_path(loops.our_loader(s, replace(ctx.cfg, batch_size=s.batch), ctx.aug_cfg, n, ctx.device),
                               n, warmup, s.batch)
    return {"size": s.images.shape[1], "channels": s.images.shape[3], "batch": s.batch, "warmup": warmup,
            "steps": steps, "amp": amp_name(ctx.amp), "data_ips": data_ips,
            "models": {name: bench_model(name, p, s, ctx, warmup, steps) for name, p in s.models.items()}}


def summarize(settings: dict[str, dict]) -> dict[str, Any]:
    """Add speedup (ours/naive) and loader_headroom (data path/step) to every model; the minima
    over the models of the default setting are the headline numbers."""
    for setting in settings.values():
        for m in setting["models"].values():
            m["speedup"] = m["ours_ips"] / m["naive_ips"]
            m["loader_headroom"] = setting["data_ips"] / m["step_ips"]
    default = settings["default"]["models"]
    return {"train_speedup": min(m["speedup"] for m in default.values()),
            "loader_headroom": min(m["loader_headroom"] for m in default.values()),
            "loader_headroom_by_model": {k: m["loader_headroom"] for k, m in default.items()}}


def default_setting(batch: int) -> Setting:
    """The balanced train slices (repeats > 0) and the test slices of data/slices."""
    channels = dataset_info()["channels"]
    sampling = read_sampling()
    ids = sampling.loc[sampling["repeats"] > 0, "slice_id"].tolist()
    images, masks = load_arrays(SLICES, ids, channels)
    test, _ = load_arrays(SLICES, split_rows("test")["slice_id"].tolist(), channels)
    return Setting("default", default_models(), images, masks, ids, SLICES, test, batch)


def default_models() -> dict[str, dict[str, Any]]:
    """Each network's `models.<name>` section of params.yaml as the keyword arguments build_model takes."""
    return {name: load_model_params(name).as_dict() for name in MODEL_NAMES}


def upsampled(base: Setting, name: str, models: dict, size: int, channels: int, batch: int, folder: Path) -> Setting:
    """`base` resized to size x size with `channels` channels, also written as PNGs under `folder`."""
    def image(im: np.ndarray) -> np.ndarray:
        gray = cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, -1)[..., :1]
        return np.repeat(gray, channels, axis=2)

    images = np.stack([image(im) for im in base.images])
    masks = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in base.masks])
    return Setting(name, models, images, masks, loops.write_pngs(images, masks, folder), folder, None, batch)


def efficiency(setting: dict, s: Setting, ctx: Context, ceiling: float) -> None:
    """Per model: FLOPs per trained image (3 x the forward's: torch's counter overcounts the backward of
    grouped convolutions, e.g. DeepLab's separable ones, about threefold), the TFLOP/s our loop and the
    train step alone reach, and their share of `ceiling` (the card's bf16 peak, or on a CPU this
    machine's measured matmul rate)."""
    for name, m in setting["models"].items():
        model = build_model(name, s.images.shape[3], **s.models[name]).to(ctx.device)
        per_image = 3 * forward_flops(model, s.images.shape[3], s.images.shape[1], ctx.device)
        m["flops_per_image"], m["achieved_tflops"] = per_image, per_image * m["ours_ips"] / 1e12
        m["ceiling_share"], m["ceiling_share_step"] = per_image * m["ours_ips"] / ceiling, per_image * m["step_ips"] / ceiling


def ceiling(ctx: Context) -> dict[str, Any]:
    """What the shares are of: the card's dense bf16 peak where it is known and bf16 is what runs, else
    this machine's measured matmul rate in the dtype training runs in (never emulated bf16)."""
    peak = loops.bf16_peak(torch.cuda.get_device_name(ctx.device)) if ctx.device.type == "cuda" else None
    if peak and ctx.amp == torch.bfloat16:
        return {"flops": peak, "source": "bf16 dense peak of the card"}
    return {"flops": loops.matmul_ceiling(ctx.device, ctx.amp),
            "source": f"measured 2048 x 2048 matmul rate, {amp_name(ctx.amp)}"}


def machine(device: torch.device) -> dict[str, Any]:
    return {"cpu": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__}


def table(result: dict) -> str:
    rows = ["| setting | model | ours img/s | layout | naive img/s | speedup | step img/s | data img/s "
            "| headroom | infer img/s | share of ceiling |", "|" + "---|" * 11]
    for sname, s in result["settings"].items():
        for name, m in s["models"].items():
            infer = f"{m['infer_ips']:.0f}" if "infer_ips" in m else "—"
            share = f"{m['ceiling_share']:.1%}" if "ceiling_share" in m else "—"
            rows.append(f"| {sname} | {name} | {m['ours_ips']:.3g} | {m['layout']} | {m['naive_ips']:.3g} "
                        f"| {m['speedup']:.2f}x | {m['step_ips']:.3g} | {s['data_ips']:.0f} "
                        f"| {m['loader_headroom']:.0f}x | {infer} | {share} |")
    rows += ["", f"train_speedup (min over models, default) = {result['train_speedup']:.2f}x; "
             f"loader_headroom = {result['loader_headroom']:.1f}x; convert {result['convert_slices_per_s']:.0f} "
             f"slices/s; peak RSS {result['memory']['peak_rss_mb']:.0f} MB",
             "amp: " + ", ".join(f"{k} {s['amp']}" for k, s in result["settings"].items()),
             *([f"ceiling: {result['ceiling']['flops'] / 1e12:.2f} TFLOP/s ({result['ceiling']['source']}); share = "
                "3 x forward FLOPs x img/s / ceiling"] if "ceiling" in result else []),
             f"machine: {result['machine']}"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="timed steps, default setting (default: 12 on CPU, 50 on GPU)")
    parser.add_argument("--real-steps", type=int, help="timed steps, real-data settings (default: 2 on CPU, 30 on GPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1+1 steps, default setting only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cfg = plans.apply(TrainParams.load())  # data/slices' plan: the batch the pipeline trains with
    device = pick_device(cfg.device)
    gpu = device.type == "cuda"
    ctx = Context(cfg, LossParams.load(), AugmentParams.load(), device, pick_amp_dtype("auto", device))
    warmup, steps = (1, 1) if args.quick else (args.warmup, args.steps or (50 if gpu else 12))
    real_steps = args.real_steps or (30 if gpu else 2)
    base = default_setting(cfg.batch_size)
    settings, real, big = {"default": bench_setting(base, ctx, warmup, steps)}, None, None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.quick:
            real = upsampled(base, "real", REAL_MODELS, 256, 3, 8, Path(tmp) / "real")
            settings["real"] = bench_setting(real, ctx, warmup, real_steps)
        if gpu and not args.quick:  # in the card's native dtype: bf16 (and its share of the peak) only where native
            big = upsampled(base, "gpu_unet512", {"unet": {"width": 64}}, 512, 1, 16, Path(tmp) / "gpu")
            settings["gpu_unet512"] = bench_setting(big, ctx, warmup, real_steps)
    top = ceiling(ctx)
    for name, setting in settings.items():
        efficiency(setting, {"default": base, "real": real, "gpu_unet512": big}[name], ctx, top["flops"])
    result = {"quick": args.quick, "machine": machine(device), "ceiling": top, "settings": settings,
              **summarize(settings),
              "convert_slices_per_s": loops.convert_rate(RAW, ConvertParams.load())}
    result["memory"] = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                        "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                        "gpu_peak_mb": max((m.get("gpu_peak_mb", 0.0) for s in settings.values()
                                            for m in s["models"].values()), default=0.0) if gpu else None}
    result["onnx"] = onnx_speed.onnx_vs_torch(base.models, base.test_images[:32 if args.quick else 256],
                                              dataset_info(), rounds=1 if args.quick else 3)
    write_json(args.out, result)
    print(table(result))
    print(onnx_speed.table(result["onnx"]))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main)
