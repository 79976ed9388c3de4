"""medseg.hardware on every CUDA branch without a GPU: torch.cuda is faked per compute capability
(availability, capability, native bf16, the build's arch list), as torch 2.14.1 reports them."""
from __future__ import annotations

import pytest
import torch

import medseg.hardware as hardware
from medseg.errors import MedsegError

BUILD = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned torch==2.14.1 CUDA 13 wheel


def fake_gpu(monkeypatch, capability: tuple[int, int], arch_list: list[str] = BUILD, count: int = 2) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {capability[0]}.{capability[1]}")
    # torch counts emulation as support; native bf16 is compute capability >= 8.0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))


@pytest.mark.parametrize("capability, amp", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                             ((9, 0), torch.bfloat16)])
def test_auto_picks_the_gpu_and_its_native_dtype(monkeypatch, capability, amp):
    fake_gpu(monkeypatch, capability)
    device = hardware.pick_device("auto")
    assert device == torch.device("cuda")
    assert hardware.pick_amp_dtype("auto", device) == amp
    assert hardware.pick_amp_dtype("off", device) is None
    assert hardware.pick_amp_dtype("fp16", device) == torch.float16


@pytest.mark.parametrize("capability", [(6, 1), (7, 0)])
def test_a_gpu_the_build_has_no_kernels_for_is_one_line(monkeypatch, capability):
    fake_gpu(monkeypatch, capability)
    with pytest.raises(MedsegError) as err:
        hardware.pick_device("auto")
    message = str(err.value)
    assert f"compute capability {capability[0]}.{capability[1]}" in message and "sm_75" in message
    assert "download.pytorch.org/whl/cu126" in message and "\n" not in message


def test_an_older_card_with_a_build_for_it_trains_in_fp16_or_fp32(monkeypatch):
    fake_gpu(monkeypatch, (7, 0), arch_list=["sm_50", "sm_60", "sm_70", "sm_75", "sm_80"])
    device = hardware.pick_device("cuda")
    assert hardware.pick_amp_dtype("auto", device) == torch.float16
    fake_gpu(monkeypatch, (6, 1), arch_list=["sm_50", "sm_60", "sm_70"])
    assert hardware.pick_amp_dtype("auto", hardware.pick_device("auto")) is None  # no tensor cores: fp32


def test_binary_and_ptx_compatibility_of_the_arch_list():
    assert hardware.build_runs_on((8, 6), ["sm_80"])  # sm_80 cubins run on 8.6 (same major, higher minor)
    assert not hardware.build_runs_on((8, 0), ["sm_86"])
    assert hardware.build_runs_on((9, 0), ["sm_80", "compute_80"])  # PTX JIT-compiles forward
    assert not hardware.build_runs_on((7, 0), BUILD)


@pytest.mark.parametrize("capability", [(7, 5), (7, 0)])
def test_explicit_bf16_on_a_card_that_only_emulates_it_is_refused(monkeypatch, capability):
    fake_gpu(monkeypatch, capability, arch_list=["sm_70", "sm_75"])
    with pytest.raises(MedsegError, match=r"train.amp=bf16 .*no native bf16.*use auto"):
        hardware.pick_amp_dtype("bf16", torch.device("cuda"))
    with pytest.raises(MedsegError, match=r"evaluate.amp=bf16"):
        hardware.pick_amp_dtype("bf16", torch.device("cuda"), key="evaluate.amp")


def test_cuda_n_pins_one_gpu_and_a_missing_one_is_refused(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), count=2)
    assert hardware.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MedsegError, match=r"train.device=cuda:2 .*2 CUDA GPU"):
        hardware.pick_device("cuda:2")


def test_cpu_dtype_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = hardware.pick_device("auto")
    assert cpu == torch.device("cpu")
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda native=native: native)
        assert hardware.pick_amp_dtype("auto", cpu) == expected
    with pytest.raises(MedsegError, match="train.amp=fp16 needs a CUDA GPU"):
        hardware.pick_amp_dtype("fp16", cpu)
    with pytest.raises(MedsegError, match="train.device=cuda but no CUDA GPU"):
        hardware.pick_device("cuda")


def test_workers_auto_overlaps_data_with_the_gpu_step_only_on_gpu(monkeypatch):
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 16)
    assert hardware.pick_workers("auto", torch.device("cpu"), 1) == 0
    assert hardware.pick_workers("auto", torch.device("cuda"), 1) == 4
    assert hardware.pick_workers("auto", torch.device("cuda"), 8) == 2  # 16 cores shared by 8 ranks
    assert hardware.pick_workers(3, torch.device("cuda"), 8) == 3
