"""Data-parallel training when launched by torchrun, and a no-op everywhere else.

torchrun starts one process per GPU and tells each who it is through WORLD_SIZE, RANK and
LOCAL_RANK. With WORLD_SIZE>1 the training loop wraps the model in DistributedDataParallel; these
helpers keep that loop free of `if distributed` branches: every collective below returns its input
unchanged in a single process, so `python -m stages.train unet` behaves exactly as before.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medseg.errors import MedsegError
from medseg.hardware import pick_device

log = logging.getLogger("medseg.distributed")


@dataclass(frozen=True)
class DistInfo:
    """Who this process is among the torchrun workers (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to dvclive and writes checkpoints."""
        return self.rank == 0


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join torchrun's process group when WORLD_SIZE>1: NCCL on CUDA (one GPU per LOCAL_RANK), else gloo."""
    if _env_world_size() <= 1 or dist.is_initialized():
        return current()
    local_rank = int(os.environ["LOCAL_RANK"])
    if pick_device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    info = current()
    log.info("rank %d of %d (local rank %d, %s)", info.rank, info.world_size, local_rank,
             dist.get_backend())
    return info


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


def run_under_torchrun(module: str, args: list[str], processes: int, device: str) -> None:
    """Re-run `python -m module args` as `processes` DDP workers through torchrun (single node),
    so a multi-GPU run happens inside `dvc repro` and lands in dvc.lock; one line if it fails."""
    import subprocess
    import sys

    if pick_device(device).type == "cuda" and processes > torch.cuda.device_count():
        raise MedsegError(f"params.yaml: train.processes={processes} but this machine has "
                          f"{torch.cuda.device_count()} CUDA GPU(s); one process drives one GPU")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", module, *args]
    log.info("starting %d DDP processes: %s", processes, " ".join(command[1:]))
    status = subprocess.run(command).returncode
    if status != 0:
        raise MedsegError(f"torchrun with train.processes={processes} exited with status {status} "
                          "(the workers' messages are above)")


def current() -> DistInfo:
    """This process's place in the process group; refuses a torchrun launch that never joined it."""
    if not dist.is_initialized():
        if _env_world_size() > 1:
            raise MedsegError("launched with WORLD_SIZE>1 but init_distributed() was not called")
        return DistInfo()
    return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP each process drives the GPU of its LOCAL_RANK."""
    return torch.device("cuda", info.local_rank) if device.type == "cuda" and info.world_size > 1 else device


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` when there is more than one process, else `model`."""
    if info.world_size <= 1:
        return model
    return DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module, whose state_dict has no `module.` prefix and loads into an unwrapped model."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Under DDP, skip the gradient all-reduce of accumulation micro-batches that do not step."""
    if enabled or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def mean_over_ranks(value: float, device: torch.device) -> float:
    """Mean of a per-rank scalar over all ranks (ranks see equally many samples under DistributedSampler)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def broadcast_from_main(values: tuple[float, ...], device: torch.device) -> tuple[float, ...]:
    """Rank 0's `values` on every rank, so every rank takes the same decisions from them."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tuple(tensor.tolist())


def barrier() -> None:
    """Wait for every rank, e.g. until rank 0 has finished writing a checkpoint."""
    if dist.is_initialized():
        dist.barrier()
