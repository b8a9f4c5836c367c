"""Where a run computes: `run.device` (auto | cpu | cuda | cuda:N) and `run.precision` (auto | fp32 | bf16).

The replay stays on the host; each sampled batch moves to the device (pinned memory on CUDA).
Models, imagination, acting and evaluation run on the device; actions come back to the host
before they reach an env.

`auto` picks CUDA when torch sees a GPU. Precision `auto` is bf16 autocast on CUDA and fp32 on
the CPU: on the CPU, bf16 autocast made this trainer's update slower even on a CPU with native
bf16 (the casts cost more than the small matmuls gain); `bf16` turns it on anywhere.
"""
from __future__ import annotations

import contextlib
import os

import torch

from quatrix_world.config import ConfigError


TORCH_DEFAULT_THREADS = torch.get_num_threads()      # read once, before any run changes it


def cpu_threads(n: int) -> int:
    """run.threads / run.update_threads -> a thread count (0 = torch's default: every core)."""
    return n or TORCH_DEFAULT_THREADS


def resolve_device(name: str) -> torch.device:
    """run.device -> a torch.device; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device={name} but torch sees no CUDA GPU (torch {torch.__version__}, "
                              f"built with CUDA {torch.version.cuda or 'none'}) — use --set run.device=cpu "
                              "(or auto), or install a CUDA build of torch on a machine with a GPU")
        if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        device = torch.device(name)
        if device.index is not None:
            if device.index >= torch.cuda.device_count():
                raise ConfigError(f"run.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
            torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on `device`, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
