"""Data-parallel training on torch.distributed (launched by torchrun; gloo on CPU, NCCL on GPU).

Each rank collects from its own env with its own seed into its own replay; every gradient is
averaged across ranks before each optimiser step, so weights stay identical; rank 0 alone writes
files (config, metrics, TensorBoard, curves, checkpoints, videos).

    torchrun --nproc_per_node 2 -m agents.cli train --config configs/minigrid_empty.yaml
    # several machines: torchrun --nnodes 2 --node_rank R --nproc_per_node 2 \
    #     --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m agents.cli train --config ...
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: str = "cpu") -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params) -> None:
    """All-reduce and average the .grad of every parameter (one flat buffer, one collective)."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def _flag_device() -> torch.device:
    """Where small collectives live: NCCL reduces CUDA tensors only, gloo host tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_ranks_agree(flag: bool) -> bool:
    """True only if `flag` is True on every rank (used for skip-on-non-finite decisions)."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], device=_flag_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's `flag` on every rank (e.g. 'evaluation reached the target, stop')."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], device=_flag_device())
    dist.broadcast(t, 0)
    return bool(t.item())


def max_param_difference(module: torch.nn.Module) -> float:
    """Largest |w_rank - w_rank0| over all parameters: 0.0 when data parallelism kept them equal."""
    if not active():
        return 0.0
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def cleanup() -> None:
    if active():
        dist.destroy_process_group()
