"""Where a run computes: `run.device` (auto | cpu | cuda | cuda:N), `run.precision` (auto | fp32 | bf16),
and whether its update is compiled (`run.compile`, `run.cudagraphs`).

The replay stays on the host; each sampled batch moves to the device (pinned memory on CUDA).
Models, imagination, acting and evaluation run on the device; actions come back to the host
before they reach an env.

`auto` picks CUDA when torch sees a GPU. Precision `auto` is bf16 autocast on CUDA and fp32 on
the CPU: on the CPU, bf16 autocast made this trainer's update slower even on a CPU with native
bf16 (the casts cost more than the small matmuls gain); `bf16` turns it on anywhere.

`run.compile` hands the world model's loss and the agent's losses to torch.compile (inductor),
forward and backward; the optimiser steps, imagination and acting stay eager. `run.cudagraphs`
also captures those graphs as CUDA graphs (mode "reduce-overhead"), which removes the launch cost
of many small kernels on a GPU. Compiling takes minutes. On the CPU it does not pay: the compiled
graph has fixed shapes, so the image encoder encodes every frame of a batch instead of each
distinct frame once (encoders.distinct_rows), and compiling itself gains about 6%
(docs/BENCHMARKS.md §10e).
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


def check_compile(cudagraphs: bool, device: torch.device) -> None:
    """CUDA graphs need a CUDA device (run.cudagraphs without run.compile is refused by the config check)."""
    if cudagraphs and device.type != "cuda":
        raise ConfigError(f"run.cudagraphs=true needs a CUDA device; this run is on {device} — set "
                          "run.cudagraphs=false (run.compile=true alone compiles on any device)")


def compile_update(fn, cudagraphs: bool):
    """`fn` compiled by torch.compile (inductor); with `cudagraphs`, captured as CUDA graphs too."""
    return torch.compile(fn, mode="reduce-overhead" if cudagraphs else None)


def mark_step(cudagraphs: bool) -> None:
    """A new training step begins: CUDA-graph outputs of the previous one may be overwritten."""
    if cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()
