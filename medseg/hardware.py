"""Device and mixed-precision choice by what the hardware runs natively.

bf16 autocast is chosen only on Ampere+ GPUs and CPUs with AVX512-BF16/AMX: on an AVX2-only CPU
it measured 10-40x slower than fp32.
"""
from __future__ import annotations

from pathlib import Path

import torch

from medseg.errors import MedsegError


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise MedsegError("params.yaml: train.device=cuda but no CUDA GPU is available; use auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if choice == "off":
        return None
    if choice == "fp16":
        if device.type != "cuda":
            raise MedsegError("params.yaml: train.amp=fp16 needs a CUDA GPU; use auto, bf16 or off")
        return torch.float16
    if choice == "bf16":
        return torch.bfloat16
    native = (torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device)[0] >= 8
              if device.type == "cuda" else cpu_has_native_bf16())
    return torch.bfloat16 if native else None


def amp_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "cpu"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "cpu")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; on CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
