"""QuatrixLM: token + learned position embeddings -> N causal QuatrixBlocks -> LN -> tied head.

The original quatrix quick-start runs unchanged:

    >>> import torch
    >>> from quatrix_world import QuatrixLM, QuatrixConfig
    >>> cfg = QuatrixConfig(vocab_size=50257, hidden_size=512, num_layers=7, max_seq_len=5120,
    ...                     q_rank=64, use_vision=True)
    >>> model = QuatrixLM(cfg)                        # ~50M params
    >>> input_ids = torch.randint(0, 50257, (1, 10))
    >>> model(input_ids)['logits'].shape             # [B, L, vocab_size]
    torch.Size([1, 10, 50257])
    >>> pixel_values = torch.randn(1, 3, 224, 224)   # multimodal: 196 image tokens prefix the text
    >>> model(input_ids, pixel_values=pixel_values)['logits'].shape
    torch.Size([1, 10, 50257])

Image tokens (QuatrixVision, when ``config.use_vision``) and audio tokens (QuatrixAudio, when
``config.use_audio``) are prefixed to the text, in that order, and count towards max_seq_len;
logits and hidden_states cover the text positions only.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import QuatrixBlock
from .config import QuatrixConfig
from .qcompass import KVCache, LayerCaches

__all__ = ["QuatrixLM"]


class QuatrixLM(nn.Module):
    def __init__(self, config: QuatrixConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        if config.vocab_size <= 0 or config.max_seq_len <= 0:
            raise ValueError(f"vocab_size and max_seq_len must be > 0, got vocab_size={config.vocab_size}, "
                             f"max_seq_len={config.max_seq_len}")
        if config.mixer not in ("qcompass", "mha"):
            raise ValueError(f"mixer must be 'qcompass' or 'mha', got {config.mixer!r}")
        self.tok_emb = nn.Embedding(config.vocab_size, H)
        self.pos_emb = nn.Embedding(config.max_seq_len, H)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            QuatrixBlock(H, config.q_rank, num_heads=config.num_heads, mixer=config.mixer,
                         compressed=config.compressed, causal=True, ffn_mult=config.ffn_mult,
                         dropout=config.dropout, bias=config.bias, max_seq_len=config.max_seq_len)
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(H)
        self.lm_head = nn.Linear(H, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        self.lm_head.weight = self.tok_emb.weight                 # tied
        self.vision = None
        self.audio = None
        if config.use_vision:
            from .vision import QuatrixVision
            self.vision = QuatrixVision(config, out_dim=H)
        if config.use_audio:
            from .audio import QuatrixAudio
            self.audio = QuatrixAudio(config, out_dim=H)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def empty_caches(self, window: Optional[int] = None) -> LayerCaches:
        return LayerCaches.empty(len(self.blocks), window=window)

    # ------------------------------------------------------------------ checks

    def _check_ids(self, input_ids) -> torch.Tensor:
        V = self.config.vocab_size
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(f"input_ids must be a LongTensor [B, L], got {type(input_ids).__name__}")
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if torch.compiler.is_compiling():       # values unread while tracing (run.compile: ids from our own envs)
            return input_ids.long()
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= V):
            raise ValueError(f"input_ids must lie in [0, vocab_size={V}), got min {int(input_ids.min())}, "
                             f"max {int(input_ids.max())}")
        return input_ids.long()

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                audio: Optional[torch.Tensor] = None, attn_mask: Optional[torch.Tensor] = None,
                caches: Optional[LayerCaches] = None) -> dict:
        """input_ids [B, L] -> {'logits': [B, L, V], 'hidden_states': [B, L, H]} (text positions).

        attn_mask: bool, True = may attend; [B, 1, T, S_total] / [B, 1, 1, S_total] as for the mixers
        (T = prefix + L new positions, S_total = cached + T), or a 2-D key mask [B, S_total] or
        [B, L] over the text only (prefix and cached keys are then visible).
        caches: LayerCaches (one KVCache per block), appended in place — see generate().
        """
        ids = self._check_ids(input_ids)
        B, L = ids.shape
        parts = []
        if pixel_values is not None:
            if self.vision is None:
                raise ValueError("pixel_values given but the model has no vision encoder — set use_vision=True")
            parts.append(self.vision(pixel_values))
        if audio is not None:
            if self.audio is None:
                raise ValueError("audio given but the model has no audio encoder — set use_audio=True")
            parts.append(self.audio(audio))
        for p in parts:
            if p.shape[0] != B:
                raise ValueError(f"pixel_values/audio batch {p.shape[0]} != input_ids batch {B}")
        P = sum(p.shape[1] for p in parts)
        if caches is not None:
            if len(caches) == 0:
                caches.extend(KVCache() for _ in self.blocks)
            if len(caches) != len(self.blocks):
                raise ValueError(f"caches must hold one KVCache per block ({len(self.blocks)}), got {len(caches)}")
        past = len(caches[0]) if caches is not None and len(caches) else 0
        T = P + L
        if past + T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} ({P} prefix + {L} text tokens, +{past} cached) exceeds "
                             f"max_seq_len={self.config.max_seq_len}")
        x = self.tok_emb(ids)
        if parts:
            x = torch.cat(parts + [x], 1)
        pos = torch.arange(past, past + T, device=ids.device)
        x = self.drop(x + self.pos_emb(pos))
        mask = self._expand_mask(attn_mask, B, T, past + T, L)
        for i, blk in enumerate(self.blocks):
            x = blk(x, attn_mask=mask, cache=None if caches is None else caches[i])
        h = self.norm(x[:, P:])
        return {"logits": self.lm_head(h), "hidden_states": h}

    @staticmethod
    def _expand_mask(attn_mask, B, T, S, L):
        if attn_mask is None or attn_mask.dim() != 2:
            return attn_mask
        if attn_mask.dtype != torch.bool:
            raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}")
        if attn_mask.shape[1] == L and L != S:           # text-only key mask: prefix/cache visible
            attn_mask = torch.cat([attn_mask.new_ones(attn_mask.shape[0], S - L), attn_mask], 1)
        if attn_mask.shape[1] != S:
            raise ValueError(f"2-D attn_mask must be [B, {S}] (all keys) or [B, {L}] (text keys), "
                             f"got {tuple(attn_mask.shape)}")
        return attn_mask[:, None, None, :]

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, greedy: bool = False, pixel_values: Optional[torch.Tensor] = None,
                 audio: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Sample (or argmax with greedy=True) max_new_tokens with the KV cache -> [B, L + max_new_tokens]."""
        ids = self._check_ids(input_ids)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (or pass greedy=True), got {temperature}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive int or None, got {top_k}")
        if max_new_tokens == 0:
            return ids
        was_training = self.training
        self.eval()
        try:
            caches = self.empty_caches()
            logits = self(ids, pixel_values=pixel_values, audio=audio, caches=caches)["logits"][:, -1]
            if caches.seq_len() + max_new_tokens - 1 > self.config.max_seq_len:
                raise ValueError(f"prompt ({caches.seq_len()} positions) + max_new_tokens={max_new_tokens} "
                                 f"exceeds max_seq_len={self.config.max_seq_len}")
            out = [ids]
            for i in range(max_new_tokens):
                nxt = self._pick(logits, temperature, top_k, greedy)
                out.append(nxt[:, None])
                if i + 1 < max_new_tokens:
                    logits = self(nxt[:, None], caches=caches)["logits"][:, -1]
            return torch.cat(out, 1)
        finally:
            self.train(was_training)

    @staticmethod
    def _pick(logits, temperature, top_k, greedy):
        if greedy:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(F.softmax(logits, -1), 1)[:, 0]
