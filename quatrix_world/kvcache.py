"""The KV cache of the causal mixers: a decoding step appends the new tokens' (action, content)
in place, then the new queries attend over cached + new keys. Plain Q-Compass caches r + H floats
per token, compressed 2r, MHA 2H (its k and v).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["KVCache", "LayerCaches", "cache_bytes_per_token"]


class KVCache:
    """Past tokens' keys and values for one mixer layer.

    ``action`` [B, heads, S, r_head] (MHA: k [B, heads, S, d_head]) and ``content``
    [B, heads, S, d_content_head] (MHA: v). Empty cache: ``KVCache()`` (tensors None, len 0).
    With ``window`` set the cache keeps only the last ``window`` tokens (sliding-window decoding).
    """

    def __init__(self, action: Optional[torch.Tensor] = None, content: Optional[torch.Tensor] = None,
                 window: Optional[int] = None):
        if window is not None and window <= 0:
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        if (action is None) != (content is None):
            raise ValueError("KVCache needs both action and content, or neither")
        self.action = action
        self.content = content
        self.window = window
        self._buf: Optional[tuple[torch.Tensor, torch.Tensor]] = None   # spare capacity behind action/content

    # MHA vocabulary
    @property
    def k(self):
        return self.action

    @property
    def v(self):
        return self.content

    def __len__(self) -> int:
        return 0 if self.action is None else self.action.shape[2]

    def __repr__(self) -> str:
        shape = None if self.action is None else (tuple(self.action.shape), tuple(self.content.shape))
        return f"KVCache(len={len(self)}, window={self.window}, shapes={shape})"

    @property
    def batch_size(self) -> Optional[int]:
        return None if self.action is None else self.action.shape[0]

    def _trim(self):
        if self.window is not None and self.action is not None and self.action.shape[2] > self.window:
            self.action = self.action[:, :, -self.window:]
            self.content = self.content[:, :, -self.window:]

    def extend(self, action: torch.Tensor, content: torch.Tensor):
        """Append in place; return the UNTRIMMED (past + new) keys and values for this step."""
        if self.action is None:
            full_a, full_c = action, content
        else:
            if self.action.shape[0] != action.shape[0]:
                raise ValueError(f"cache batch size {self.action.shape[0]} != input batch size "
                                 f"{action.shape[0]} — repeat_interleave/index_select the cache to match")
            grad = torch.is_grad_enabled() and (action.requires_grad or self.action.requires_grad)
            if self.window is None and not grad and action.dtype == self.action.dtype:
                full_a, full_c = self._append_in_place(action, content)
            else:
                full_a = torch.cat([self.action, action], 2)
                full_c = torch.cat([self.content, content], 2)
                self._buf = None
        self.action, self.content = full_a, full_c
        self._trim()
        return full_a, full_c

    def _append_in_place(self, action: torch.Tensor, content: torch.Tensor):
        """Write the new tokens into preallocated buffers (doubling when full) instead of copying
        the whole cache on every step; action/content are views of the filled part."""
        n, t = self.action.shape[2], action.shape[2]
        if self._buf is None or self._buf[0].shape[2] < n + t:
            cap = max(16, 2 * (n + t))
            bufs = []
            for old in (self.action, self.content):
                b = old.new_empty(old.shape[0], old.shape[1], cap, old.shape[3])
                b[:, :, :n] = old
                bufs.append(b)
            self._buf = (bufs[0], bufs[1])
        buf_a, buf_c = self._buf
        buf_a[:, :, n:n + t] = action
        buf_c[:, :, n:n + t] = content
        return buf_a[:, :, :n + t], buf_c[:, :, :n + t]

    def append(self, action: torch.Tensor, content: torch.Tensor) -> "KVCache":
        self.extend(action, content)
        return self

    def _map(self, fn) -> "KVCache":
        if self.action is None:
            return KVCache(window=self.window)
        return KVCache(fn(self.action), fn(self.content), window=self.window)

    def repeat_interleave(self, g: int) -> "KVCache":
        """New cache with row b repeated as rows b*g .. b*g+g-1 (branching rollouts)."""
        return self._map(lambda t: t.repeat_interleave(g, 0))

    def index_select(self, idx: torch.Tensor) -> "KVCache":
        return self._map(lambda t: t.index_select(0, idx.to(t.device)))

    def clone(self) -> "KVCache":
        return self._map(lambda t: t.clone())

    def detach(self) -> "KVCache":
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> "KVCache":
        return self._map(lambda t: t.to(*args, **kwargs))

    def nbytes(self) -> int:
        if self.action is None:
            return 0
        return (self.action.numel() * self.action.element_size()
                + self.content.numel() * self.content.element_size())


class LayerCaches(list):
    """One KVCache per block of a stack."""

    @classmethod
    def empty(cls, num_layers: int, window: Optional[int] = None) -> "LayerCaches":
        return cls(KVCache(window=window) for _ in range(num_layers))

    def repeat_interleave(self, g: int) -> "LayerCaches":
        return LayerCaches(c.repeat_interleave(g) for c in self)

    def index_select(self, idx: torch.Tensor) -> "LayerCaches":
        return LayerCaches(c.index_select(idx) for c in self)

    def clone(self) -> "LayerCaches":
        return LayerCaches(c.clone() for c in self)

    def detach(self) -> "LayerCaches":
        return LayerCaches(c.detach() for c in self)

    def to(self, *args, **kwargs) -> "LayerCaches":
        return LayerCaches(c.to(*args, **kwargs) for c in self)

    def seq_len(self) -> int:
        """Tokens held (by the first layer's cache; all layers hold the same count)."""
        return len(self[0]) if len(self) else 0

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self)


def cache_bytes_per_token(hidden_size: int, q_rank: int, mixer: str = "qcompass", compressed: bool = False,
                          dtype_bytes: int = 4) -> int:
    """Bytes one token occupies in one layer's cache: plain r+H, compressed 2r, MHA 2H floats."""
    if mixer == "mha":
        floats = 2 * hidden_size
    elif mixer == "qcompass":
        floats = 2 * q_rank if compressed else q_rank + hidden_size
    else:
        raise ValueError(f"mixer must be 'qcompass' or 'mha', got {mixer!r}")
    return floats * dtype_bytes
