"""QuatrixBlock (pre-LN: LN -> mixer -> residual; LN -> GELU FFN -> residual) and a stack of them.

The mixer is Q-Compass (default) or standard MHA (the ablation switch ``mixer="mha"``); both take
the same ``(x, attn_mask=None, cache=None)`` and keep the same cache semantics.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .qcompass import MHA, KVCache, LayerCaches, QCompass

__all__ = ["FeedForward", "QuatrixBlock", "QuatrixStack", "MHA", "build_mixer"]


def build_mixer(mixer: str, hidden_size: int, q_rank: int, num_heads: int = 1, compressed: bool = False,
                causal: bool = True, dropout: float = 0.0, bias: bool = False,
                max_seq_len: Optional[int] = None) -> nn.Module:
    if mixer == "qcompass":
        return QCompass(hidden_size, q_rank, num_heads=num_heads, dropout=dropout, compressed=compressed,
                        bias=bias, causal=causal, max_seq_len=max_seq_len)
    if mixer == "mha":
        return MHA(hidden_size, num_heads=num_heads, dropout=dropout, bias=bias, causal=causal,
                   max_seq_len=max_seq_len)
    raise ValueError(f"mixer must be 'qcompass' or 'mha', got {mixer!r}")


class FeedForward(nn.Sequential):
    def __init__(self, hidden_size: int, ffn_mult: int = 4, dropout: float = 0.0, bias: bool = False):
        inner = hidden_size * ffn_mult
        super().__init__(nn.Linear(hidden_size, inner, bias=bias), nn.GELU(),
                         nn.Linear(inner, hidden_size, bias=bias), nn.Dropout(dropout))


class QuatrixBlock(nn.Module):
    def __init__(self, hidden_size: int, q_rank: int, num_heads: int = 1, mixer: str = "qcompass",
                 compressed: bool = False, causal: bool = True, ffn_mult: int = 4, dropout: float = 0.0,
                 bias: bool = False, max_seq_len: Optional[int] = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.ln1 = nn.LayerNorm(hidden_size)
        self.mixer = build_mixer(mixer, hidden_size, q_rank, num_heads=num_heads, compressed=compressed,
                                 causal=causal, dropout=dropout, bias=bias, max_seq_len=max_seq_len)
        self.drop = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(hidden_size)
        self.ffn = FeedForward(hidden_size, ffn_mult, dropout, bias)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, reference: bool = False) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.ln1(x), attn_mask=attn_mask, cache=cache, reference=reference))
        return x + self.ffn(self.ln2(x))


class QuatrixStack(nn.Module):
    """N QuatrixBlocks + a final LayerNorm.

    forward(x [B,T,H], attn_mask=None, caches: LayerCaches | None = None) -> [B,T,H].
    ``caches`` holds one KVCache per block (``LayerCaches.empty(len(stack.blocks))``); an empty
    ``LayerCaches()`` is filled with fresh caches on first use.
    """

    def __init__(self, num_layers: int, hidden_size: int, q_rank: int, num_heads: int = 1,
                 mixer: str = "qcompass", compressed: bool = False, causal: bool = True, ffn_mult: int = 4,
                 dropout: float = 0.0, bias: bool = False, max_seq_len: Optional[int] = None):
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.blocks = nn.ModuleList(
            QuatrixBlock(hidden_size, q_rank, num_heads=num_heads, mixer=mixer, compressed=compressed,
                         causal=causal, ffn_mult=ffn_mult, dropout=dropout, bias=bias, max_seq_len=max_seq_len)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)

    def empty_caches(self, window: Optional[int] = None) -> LayerCaches:
        return LayerCaches.empty(len(self.blocks), window=window)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                caches: Optional[LayerCaches] = None, reference: bool = False) -> torch.Tensor:
        if caches is not None:
            if len(caches) == 0:
                caches.extend(KVCache() for _ in self.blocks)
            if len(caches) != len(self.blocks):
                raise ValueError(f"caches must hold one KVCache per block ({len(self.blocks)}), got {len(caches)}")
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=attn_mask, cache=None if caches is None else caches[i], reference=reference)
        return self.norm(x)


def bidirectional_blocks(width: int, config, num_layers: int) -> nn.ModuleList:
    """`num_layers` bidirectional QuatrixBlocks (QCompassBi, or MHA for the ablation) for the
    vision and audio encoders, with the mixer settings of a QuatrixConfig."""
    return nn.ModuleList(
        QuatrixBlock(width, config.q_rank, num_heads=config.num_heads, mixer=config.mixer,
                     compressed=config.compressed, causal=False, ffn_mult=config.ffn_mult,
                     dropout=config.dropout, bias=config.bias)
        for _ in range(num_layers))

