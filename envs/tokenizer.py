"""A tiny word-level tokenizer with a FIXED vocabulary (so checkpoints never depend on what was seen).

The vocabulary covers every word of the MiniGrid and BabyAI mission strings plus the example envs.
Unknown words map to <unk>; sequences are cut or padded with <pad> (id 0) to `max_len`.
"""
from __future__ import annotations

import re

import torch

SPECIALS = ["<pad>", "<unk>"]
# Every word found in minigrid/envs/*.py and minigrid/envs/babyai mission templates, sorted by theme.
WORDS = [
    # colours (minigrid.core.constants.COLOR_NAMES)
    "red", "green", "blue", "purple", "yellow", "grey",
    # objects and places
    "key", "ball", "box", "door", "goal", "square", "object", "objects", "lava", "wall", "opening",
    "room", "rooms", "hallway", "end", "floor",
    # verbs
    "go", "get", "fetch", "pick", "up", "open", "put", "use", "unlock", "avoid", "find", "traverse",
    "reach", "must", "matching", "say", "listen",
    # function words and BabyAI relations
    "to", "a", "an", "the", "and", "then", "near", "next", "in", "front", "of", "behind", "on", "your",
    "left", "right", "it", "from", "at", "after", "you", "this", "that", "is", "which", "color", "colour",
    ",", ".",
]


class Tokenizer:
    """encode(str) -> LongTensor[max_len]; decode(ids) -> str. pad=0, unk=1."""

    pad_id, unk_id = 0, 1

    def __init__(self, words: list[str] | None = None, max_len: int = 16):
        words = list(WORDS if words is None else words)
        self.itos = SPECIALS + [w for w in dict.fromkeys(words) if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_len = int(max_len)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", str(text).lower())

    def encode(self, text: str) -> torch.Tensor:
        """Token ids, int64 [max_len] (a fresh tensor: callers may modify it)."""
        ids = self._cache.get(text)
        if ids is None:
            toks = [self.stoi.get(w, self.unk_id) for w in self.split(text)][: self.max_len]
            ids = torch.zeros(self.max_len, dtype=torch.int64)
            if toks:
                ids[: len(toks)] = torch.tensor(toks, dtype=torch.int64)
            if len(self._cache) < 4096:
                self._cache[text] = ids
        return ids.clone()

    def encode_numpy(self, text: str):
        return self.encode(text).numpy()

    def decode(self, ids) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        words = [self.itos[i] if 0 <= i < len(self.itos) else "<unk>" for i in ids if i != self.pad_id]
        return " ".join(words).replace(" ,", ",").replace(" .", ".")

    def to_dict(self) -> dict:
        return {"words": self.itos[len(SPECIALS):], "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls(words=d["words"], max_len=d.get("max_len", 16))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, max_len={self.max_len})"
