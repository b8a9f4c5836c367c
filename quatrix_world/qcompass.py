"""Q-Compass sequence mixing (causal and bidirectional) and an MHA baseline (the KV cache: kvcache.py).

    state  = x W_s                       [B, T, r]    (per head: r_head = r / heads)
    action = x W_a                       [B, T, r]
    Q      = softmax(state . action^T / sqrt(r_head) + mask)
    out    = W_o(Q @ content)            content = x split per head (plain)
                                         or W_c(state * action) (compressed, r floats/token)

    >>> mix = QCompass(hidden_size=512, q_rank=64)
    >>> sum(p.numel() for p in mix.parameters())
    327680

Two paths compute the same function:
  * ``reference=True``: the readable three lines above in plain torch (the truth the tests use);
  * default: the same plain matmuls for short work (T <= 16 queries, e.g. decoding, or T*S <= 128^2,
    where they are faster on CPU), else ``F.scaled_dot_product_attention``. On CPU, SDPA with a query/key head dim
    (r_head, e.g. 8) different from the value head dim (e.g. 64) falls off the fused flash kernel
    into a slow unfused path (~4x slower fwd at L=1024). Zero-padding state and action up to the
    value head dim leaves every score unchanged (the extra coordinates contribute 0 to the dot
    product; the scale is passed explicitly as 1/sqrt(r_head)) and keeps the fused kernel. This is
    exact, not an approximation, and is measured by bench/mixer.py. On a GPU the T*S rule and the
    padding are off (both measured slower there, bench/mixer.py --device cuda): SDPA's CUDA kernels
    take a q/k head dim different from v's. Decoding steps (T <= 16) take the matmuls everywhere.

With a KV cache (kvcache.py) a decoding step appends the new tokens' (action, content) in place,
then the new queries attend over cached + new keys.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kvcache import KVCache, LayerCaches, cache_bytes_per_token

__all__ = ["KVCache", "LayerCaches", "QCompass", "QCompassBi", "MHA", "cache_bytes_per_token"]


# ----------------------------------------------------------------------------- shared core

def _check_input(x: torch.Tensor, hidden_size: int, cache: Optional[KVCache], max_seq_len: Optional[int]):
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a 3-D tensor [B, T, hidden_size={hidden_size}], got shape {shape}")
    if x.shape[-1] != hidden_size:
        raise ValueError(f"x last dim must equal hidden_size={hidden_size}, got {x.shape[-1]} "
                         f"(x shape {tuple(x.shape)})")
    if cache is not None and not isinstance(cache, KVCache):
        raise ValueError(f"cache must be a KVCache or None, got {type(cache).__name__}")
    past = len(cache) if cache is not None else 0
    if max_seq_len is not None and x.shape[1] + past > max_seq_len:
        raise ValueError(f"sequence length {x.shape[1]} (+{past} cached) exceeds max_seq_len={max_seq_len}")


def _build_mask(attn_mask: Optional[torch.Tensor], causal: bool, T: int, S: int,
                device, batch: int) -> Optional[torch.Tensor]:
    """Bool mask (True = may attend) broadcastable to [B, heads, T, S], or None for 'all'.

    Causal with S > T (a cache in front): query i sees keys 0 .. S-T+i (bottom-right aligned).
    """
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got dtype {attn_mask.dtype}")
        if (attn_mask.dim() > 4 or attn_mask.shape[-1] != S
                or (attn_mask.dim() >= 2 and attn_mask.shape[-2] not in (1, T))):
            raise ValueError(f"attn_mask must be broadcastable to [B, heads, T={T}, S_total={S}] "
                             f"(pass [B, 1, T, S] or [B, 1, 1, S]), got shape {tuple(attn_mask.shape)}")
        mask = attn_mask.to(device)
        if mask.dim() == 4 and mask.shape[0] not in (1, batch):
            raise ValueError(f"attn_mask batch dim {mask.shape[0]} != batch size {batch} "
                             f"(attn_mask shape {tuple(mask.shape)})")
    if causal and T > 1:
        c = torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)
        mask = c if mask is None else mask & c
    return mask


def _attend(q, k, v, mask, causal_plain: bool, scale: float, dropout_p: float, reference: bool,
            pad: bool = True):
    """softmax(q k^T * scale + mask) v for [B, h, T, dq] / [B, h, S, dq] / [B, h, S, dv].

    ``causal_plain``: no explicit mask and T == S causal (lets SDPA use is_causal). Rows that may
    attend to nothing output 0 (instead of NaN) in both paths.
    """
    empty_rows = None
    if mask is not None:                      # no host sync on whether such rows exist (compile, CUDA)
        empty_rows = ~mask.any(-1, keepdim=True)
        mask = mask | empty_rows              # attend anywhere, then zero: finite values and grads
    if reference:
        scores = (q @ k.transpose(-2, -1)) * scale
        if causal_plain:
            T, S = scores.shape[-2:]
            scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T),
                                        float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(-1)
        if dropout_p > 0:
            probs = F.dropout(probs, dropout_p)
        out = probs @ v
    else:
        dq, dv = q.shape[-1], v.shape[-1]
        if pad and dq < dv:    # keep CPU flash kernel: equal head dims; zero coords leave scores unchanged
            q = F.pad(q, (0, dv - dq))
            k = F.pad(k, (0, dv - dq))
        elif pad and dv < dq:
            v = F.pad(v, (0, dq - dv))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                             is_causal=causal_plain, scale=scale)
        if out.shape[-1] != dv:
            out = out[..., :dv]
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    return out


def _mix(module, x, attn_mask, cache, reference, q, k, v):
    """Run attention for heads-split q [B,h,T,.], k/v [B,h,T,.] with cache + masks -> [B,h,T,dv]."""
    T = x.shape[1]
    if cache is not None:
        k, v = cache.extend(k, v)
    S = k.shape[2]
    causal_plain = module.causal and attn_mask is None and S == T and T > 1
    mask = None if causal_plain else _build_mask(attn_mask, module.causal, T, S, x.device, x.shape[0])
    p = module.dropout if module.training else 0.0
    # Short work (decoding steps, short sequences): plain matmuls beat SDPA's flash kernel on CPU
    # (T=1 over 256 cached keys: ~5x; L<=128 training: ~7%); longer: padded flash SDPA wins.
    # On a GPU SDPA already wins at L=64 and its kernels take q/k head dims != v's, unpadded
    # (bench/mixer.py --device cuda, H100): the area rule and the zero-padding are CPU-only.
    cpu = x.device.type == "cpu"
    matmul = reference or T <= module.matmul_max_queries or (cpu and T * S <= module.matmul_max_area)
    return _attend(q, k, v, mask, causal_plain, module.scale, p, matmul, module.pad_qk and cpu)


# ----------------------------------------------------------------------------- Q-Compass

def routing_weights(q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: Optional[torch.Tensor],
                    causal: bool) -> torch.Tensor:
    """softmax(q kᵀ · scale) under the causal/user mask, [B, heads, T, T]; fully masked rows are 0."""
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * scale
    mask = _build_mask(attn_mask, causal, T, T, q.device, q.shape[0])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).nan_to_num(0.0)


# Fast-path dispatch defaults (measured on CPU, bench/mixer.py); each module copies them at
# construction, so a benchmark or test can change one module's without touching the others.
PAD_QK = True                   # zero-pad head dims to match (False only to benchmark the slow path)
MATMUL_MAX_QUERIES = 16         # plain matmuls when T <= this ...
MATMUL_MAX_AREA = 128 * 128     # ... or T * S <= this on CPU; else SDPA


def _dispatch_defaults(module: nn.Module) -> None:
    module.pad_qk = PAD_QK
    module.matmul_max_queries = MATMUL_MAX_QUERIES
    module.matmul_max_area = MATMUL_MAX_AREA


class QCompass(nn.Module):
    """Q-Compass mixer: value-based routing with three projections (W_s, W_a, W_o; + W_c compressed).

    forward(x [B,T,H], attn_mask=None, cache=None, reference=False) -> [B,T,H]
      attn_mask: bool, True = may attend, broadcastable to [B, heads, T, len(cache)+T];
                 ANDed with the causal mask when causal.
      cache:     KVCache, appended in place with the new tokens before they attend.
    """

    def __init__(self, hidden_size: int, q_rank: int, num_heads: int = 1, dropout: float = 0.0,
                 compressed: bool = False, bias: bool = False, causal: bool = True,
                 max_seq_len: Optional[int] = None):
        super().__init__()
        _dispatch_defaults(self)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be > 0, got {num_heads}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if q_rank % num_heads:
            raise ValueError(f"q_rank ({q_rank}) must be divisible by num_heads ({num_heads})")
        self.hidden_size, self.q_rank, self.num_heads = hidden_size, q_rank, num_heads
        self.r_head, self.d_head = q_rank // num_heads, hidden_size // num_heads
        self.compressed, self.causal, self.max_seq_len = compressed, causal, max_seq_len
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(self.r_head)
        self.W_s = nn.Linear(hidden_size, q_rank, bias=bias)
        self.W_a = nn.Linear(hidden_size, q_rank, bias=bias)
        if compressed:
            self.W_c = nn.Linear(q_rank, q_rank, bias=bias)
            self.W_o = nn.Linear(q_rank, hidden_size, bias=bias)
        else:
            self.W_o = nn.Linear(hidden_size, hidden_size, bias=bias)

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, q_rank={self.q_rank}, heads={self.num_heads}, "
                f"compressed={self.compressed}, causal={self.causal}")

    def _heads(self, t: torch.Tensor) -> torch.Tensor:           # [B,T,n*d] -> [B,n,T,d]
        B, T, D = t.shape
        return t.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, reference: bool = False) -> torch.Tensor:
        _check_input(x, self.hidden_size, cache, self.max_seq_len)
        B, T, _ = x.shape
        state, action = self.W_s(x), self.W_a(x)                 # [B, T, r]
        content = self.W_c(state * action) if self.compressed else x
        out = _mix(self, x, attn_mask, cache, reference,
                   self._heads(state), self._heads(action), self._heads(content))
        return self.W_o(out.transpose(1, 2).reshape(B, T, -1))

    @torch.no_grad()
    def q_map(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The routing weights Q(s, a) [B, heads, T, T] (for pictures and debugging)."""
        _check_input(x, self.hidden_size, None, self.max_seq_len)
        return routing_weights(self._heads(self.W_s(x)), self._heads(self.W_a(x)), self.scale, attn_mask,
                               self.causal)


class QCompassBi(QCompass):
    """Bidirectional Q-Compass (no causal mask) for images and audio."""

    def __init__(self, hidden_size: int, q_rank: int, num_heads: int = 1, dropout: float = 0.0,
                 compressed: bool = False, bias: bool = False, causal: bool = False,
                 max_seq_len: Optional[int] = None):
        super().__init__(hidden_size, q_rank, num_heads=num_heads, dropout=dropout, compressed=compressed,
                         bias=bias, causal=causal, max_seq_len=max_seq_len)


# ----------------------------------------------------------------------------- MHA baseline

class MHA(nn.Module):
    """Standard multi-head attention (W_q, W_k, W_v, W_o) with Q-Compass's forward signature.

    Cache holds k (as ``action``) and v (as ``content``): 2H floats per token.
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, dropout: float = 0.0, bias: bool = False,
                 causal: bool = True, max_seq_len: Optional[int] = None, q_rank: Optional[int] = None,
                 compressed: bool = False):
        super().__init__()
        _dispatch_defaults(self)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be > 0, got {num_heads}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.d_head = hidden_size // num_heads
        self.causal, self.max_seq_len, self.dropout = causal, max_seq_len, dropout
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.W_q = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.W_k = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.W_v = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.W_o = nn.Linear(hidden_size, hidden_size, bias=bias)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, heads={self.num_heads}, causal={self.causal}"

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, D = t.shape
        return t.view(B, T, self.num_heads, self.d_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, reference: bool = False) -> torch.Tensor:
        _check_input(x, self.hidden_size, cache, self.max_seq_len)
        B, T, _ = x.shape
        out = _mix(self, x, attn_mask, cache, reference,
                   self._heads(self.W_q(x)), self._heads(self.W_k(x)), self._heads(self.W_v(x)))
        return self.W_o(out.transpose(1, 2).reshape(B, T, -1))
