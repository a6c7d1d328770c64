"""Which device a cell runs on, checked before anything is loaded; how the hardware is named;
and a cell's key (what it computes on which hardware), computed here and nowhere else."""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from bench.errors import BenchError


def pick_device(name: str) -> torch.device:
    """The device a cell names, or one line saying why it cannot be used here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"device {name!r}: no CUDA GPU is visible on this machine; use --device cpu or --device auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise BenchError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s); use cuda:0 or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise BenchError("device 'mps' is not available on this machine; use --device cpu or --device auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC"), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def hardware_name(device: torch.device) -> str:
    """The hardware a timing belongs to: the GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads ({cpu_name()})"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cell_key(cfg) -> str:
    """The cell's identity in the store: what it computes (CellConfig) and the hardware it runs on here."""
    return cfg.key(hardware_name(pick_device(cfg.device)))
