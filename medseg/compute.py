"""What produced a model's numbers and what it cost (parameters, FLOPs, time, memory), so a
comparison "on equal terms" can be checked (Isensee et al. 2024). Kept out of metrics.json:
timings differ from run to run."""
from __future__ import annotations

from typing import Any

from medseg.hardware import device_name
from medseg.inference import forward_flops
from medseg.model_card import Compute


def provenance(compute: Compute, device, eval_amp: str) -> dict[str, Any]:
    """What produced the numbers: torch, and the device and autocast dtype training (its `compute`
    record in best.pt) and evaluation really used."""
    return {"torch": compute.torch or "unknown", "train_device": compute.device or "unknown",
            "train_amp": compute.amp or "unknown", "eval_device": device_name(device), "eval_amp": eval_amp}


def compute_cost(computes: list[Compute], model, channels: int, size: int, device) -> dict[str, Any]:
    """What a model cost, so a comparison on "equal terms" can be checked (Isensee et al. 2024);
    a k-fold model's epochs and training time are the sums over its folds. Only what the checkpoints
    record (training time is fixed once trained): evaluate's own timing would change its outputs, and
    dvc.lock, on every run, so it goes to results/timings/ (medseg.paths.TIMINGS), which DVC does not track."""
    def total(key: str) -> Any:
        values = [getattr(t, key) for t in computes]
        return None if any(v is None for v in values) else sum(values)

    seconds = total("train_seconds")
    draws = None if seconds is None else sum(t.train_images_per_s * t.train_seconds for t in computes)
    first = computes[0]
    return {"parameters": int(sum(p.numel() for p in model.parameters())), "members": len(computes),
            "gflops_per_image": forward_flops(model, channels, size, device) / 1e9, "image_size": size,
            "epochs": total("epochs"), "train_seconds": seconds,
            "train_images_per_s": None if draws is None else draws / max(seconds, 1e-9),
            "train_peak_memory_mb": None if any(t.peak_memory_mb is None for t in computes)
            else max(t.peak_memory_mb for t in computes),
            "train_device": first.device, "train_amp": first.amp, "eval_device": device_name(device)}
