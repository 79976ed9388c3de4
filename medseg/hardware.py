"""Device, mixed precision and loader workers by what the hardware runs natively.

bf16 autocast is chosen only on GPUs of compute capability >= 8.0 and CPUs with AVX512-BF16/AMX
(on an AVX2-only CPU it measured 10-40x slower than fp32); fp16 with a GradScaler on 7.x cards,
whose tensor cores run fp16 but only emulate bf16 (torch's `is_bf16_supported()` counts emulation).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from medseg.errors import MedsegError

# What to install for a card the pinned build has no kernels for (the CUDA 12.6 wheels still carry sm_50-sm_90).
OLDER_CARDS = "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu126"


def build_runs_on(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build compiled for `arch_list` runs on a card of `capability`: a cubin sm_XY runs
    on major X with minor >= Y; PTX compute_XY is JIT-compiled for any newer card."""
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)a?", arch)
        if not match:
            continue
        kind, built = match.group(1), (int(match.group(2)), int(match.group(3)))
        if kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if kind == "compute" and built <= capability:
            return True
    return False


def check_cuda_build(device: torch.device) -> None:
    """Refuse, in one line, a GPU the installed torch has no kernels for (its first kernel would fail)."""
    capability, arch_list = torch.cuda.get_device_capability(device), torch.cuda.get_arch_list()
    if not build_runs_on(capability, arch_list):
        raise MedsegError(f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}) "
                          f"has no kernels in this torch {torch.__version__} build (built for {' '.join(arch_list)}); "
                          f"install a build for it: {OLDER_CARDS}")


def pick_device(choice: str, key: str = "train.device") -> torch.device:
    """`auto` (the first GPU, else the CPU), `cpu`, `cuda` or `cuda:N` (one GPU of several, e.g. one
    per queued experiment), checked against what this machine and this torch build can run."""
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise MedsegError(f"{_named(key)}={choice} but no CUDA GPU is available; use auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MedsegError(f"{_named(key)}={choice} but this machine has {torch.cuda.device_count()} "
                              f"CUDA GPU(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        check_cuda_build(device)
    return device


def _named(key: str) -> str:
    """How an error names the setting: a params key, or a command-line option as given."""
    return key if key.startswith("-") else f"params.yaml: {key}"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return cpu_has_native_bf16()


def pick_amp_dtype(choice: str, device: torch.device, key: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype, or None for fp32: `auto` is bf16 where it is native, fp16 on 7.x GPUs
    (with a GradScaler in training), fp32 elsewhere."""
    if choice == "off":
        return None
    if choice == "fp16":
        if device.type != "cuda":
            raise MedsegError(f"{_named(key)}=fp16 needs a CUDA GPU; use auto, bf16 or off")
        return torch.float16
    if choice == "bf16":
        if device.type == "cuda" and not native_bf16(device):
            major, minor = torch.cuda.get_device_capability(device)
            raise MedsegError(f"{_named(key)}=bf16 but {torch.cuda.get_device_name(device)} (compute capability "
                              f"{major}.{minor}) has no native bf16, only a slow emulation; use auto (fp16) or off")
        return torch.bfloat16
    if native_bf16(device):
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 7:
        return torch.float16
    return None


def pick_workers(choice: int | str, device: torch.device, world_size: int) -> int:
    """Loader processes: `auto` is 0 on CPU (the cores are busy with the step) and, on a GPU, up to
    4 per process so augmentation and collation overlap the GPU step."""
    if choice != "auto":
        return int(choice)
    if device.type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 1) // max(world_size, 1)))


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

