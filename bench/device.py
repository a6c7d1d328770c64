"""Which device a cell runs on, checked before anything is loaded, and how the hardware is named."""
from __future__ import annotations

import platform

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


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"
