"""`python -m medseg.doctor` (`make doctor`): what this machine offers a training run, before one starts.

Prints the torch, CUDA, cuDNN and DVC versions, the devices and their memory, whether bf16 runs
natively, the device and autocast dtype that `train.device: auto` and `train.amp: auto` pick (the
medseg.hardware functions training calls), the DDP backends torch can use, and a few-second conv
benchmark (a training step, forward and backward) in fp32, and under bf16 autocast where bf16 is
native (emulated bf16 is not timed: 10-40x slower, it would hold the doctor for a minute).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from medseg.hardware import amp_name, cpu_has_native_bf16, device_name, pick_amp_dtype, pick_device
from medseg.inference import autocast

BATCH, SIZE, WIDTH, LAYERS = 8, 128, 32, 3  # the benchmark: LAYERS 3x3 convs of WIDTH channels at SIZE px
DDP_BACKENDS = ("nccl", "gloo", "mpi", "ucc", "xccl")
GIB = 2**30


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cudnn() -> str:
    """cuDNN's version as x.y.z (torch reports 9.10.2 as 91002, 8.9.2 as 8902)."""
    if not torch.backends.cudnn.is_available():
        return "not available"
    v = torch.backends.cudnn.version()
    major, rest = (v // 10_000, v % 10_000) if v >= 90_000 else (v // 1_000, v % 1_000)
    return f"{major}.{rest // 100}.{rest % 100}"


def versions() -> list[tuple[str, str]]:
    return [("python", platform.python_version()), ("torch", torch.__version__),
            ("cuda (torch build)", torch.version.cuda or "none (a CPU build of torch)"), ("cudnn", _cudnn()),
            ("dvc", _version("dvc")), ("monai", _version("monai")),
            ("segmentation-models-pytorch", _version("segmentation-models-pytorch"))]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def devices() -> list[tuple[str, str]]:
    """The CPU and every visible GPU with memory and whether bf16 is native (as `amp: auto` decides it)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    rows = [("cpu", f"{device_name(torch.device('cpu'))}, {os.cpu_count()} logical cores "
                    f"({torch.get_num_threads()} torch threads), {ram:.1f} GiB RAM, "
                    f"native bf16: {_yes(cpu_has_native_bf16())}")]
    if not torch.cuda.is_available():
        return rows + [("gpu", "none visible to torch")]
    for i in range(torch.cuda.device_count()):
        gpu = torch.device("cuda", i)
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        rows.append((f"cuda:{i}", f"{props.name}, {total / GIB:.1f} GiB ({free / GIB:.1f} GiB free), compute "
                                  f"capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, "
                                  f"native bf16: {_yes(pick_amp_dtype('auto', gpu) == torch.bfloat16)}"))
    return rows


def ddp_backends() -> str:
    """Which torch.distributed backends this build offers (medseg's DDP uses nccl on GPUs, gloo on CPU)."""
    if not dist.is_available():
        return "torch.distributed is not available in this build"
    found = [(name, getattr(dist, f"is_{name}_available", None)) for name in DDP_BACKENDS]
    return ", ".join(f"{name}: {_yes(check())}" for name, check in found if check is not None)


def conv_net() -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(LAYERS):
        layers += [nn.Conv2d(1 if i == 0 else WIDTH, WIDTH, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(WIDTH, 1, 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(device: torch.device, dtype: torch.dtype | None, seconds: float) -> tuple[float, float, int]:
    """(ms per training step, images/s, steps timed) of conv_net on a BATCH x 1 x SIZE x SIZE batch:
    one warm-up step (cuDNN's algorithm search, the allocator), then steps for about `seconds`."""
    torch.manual_seed(0)
    model = conv_net().to(device)
    x = torch.rand(BATCH, 1, SIZE, SIZE, device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = model(x)
        out.float().square().mean().backward()
        _sync(device)

    step()
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / steps, BATCH * steps / elapsed, steps


def report(device_choice: str, seconds: float, emit: Callable[[str], None] = print) -> None:
    width = 30
    line = lambda key, value: emit(f"{key + ':':<{width}} {value}")  # noqa: E731
    for key, value in versions():
        line(key, value)
    for key, value in devices():
        line(key, value)
    auto = pick_device("auto")
    line("train.device auto picks", f"{auto} ({device_name(auto)})")
    line("train.amp auto picks", amp_name(pick_amp_dtype("auto", auto)))
    line("ddp backends", ddp_backends())
    device = pick_device(device_choice)
    emit(f"benchmark on {device}: {LAYERS} conv layers of {WIDTH} channels, batch {BATCH} x 1 x {SIZE} x {SIZE}, "
         "forward + backward")
    native = pick_amp_dtype("auto", device) == torch.bfloat16
    speed = {}
    for dtype in (None, torch.bfloat16) if native else (None,):
        ms, per_s, steps = benchmark(device, dtype, seconds)
        speed[dtype] = per_s
        line(f"bench {amp_name(dtype)}", f"{ms:.2f} ms/step, {per_s:.3f} images/s ({steps} steps)")
    if native:
        line("bf16 speed-up", f"{speed[torch.bfloat16] / speed[None]:.2f}x over fp32 (bf16 native here: yes)")
    else:  # emulated bf16 runs 10-40x slower than fp32: timing it would take the doctor a minute to say so
        line("bench bfloat16", "not run: bf16 is emulated here (10-40x slower than fp32), so train.amp auto trains in fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to benchmark")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per dtype (at least 3 steps)")
    args = parser.parse_args()
    report(args.device, args.seconds)


if __name__ == "__main__":
    from medseg.cli import run_stage

    run_stage(main)
