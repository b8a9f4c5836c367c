"""Quatrix World: Q-Compass models (text, vision, audio) and world models built on them.

Every name below loads on first use (`from quatrix_world import QuatrixLM` imports torch then), so
importing the package itself is instant.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"QuatrixConfig": "config", "Config": "config", "WorldConfig": "config", "load_config": "config",
         "QCompass": "qcompass", "QCompassBi": "qcompass", "KVCache": "qcompass", "LayerCaches": "qcompass",
         "MHA": "qcompass", "cache_bytes_per_token": "qcompass",
         "QuatrixBlock": "blocks", "QuatrixStack": "blocks", "QuatrixLM": "lm", "QuatrixVision": "vision",
         "QuatrixAudio": "audio", "log_mel_spectrogram": "audio", "mel_filterbank": "audio",
         "QuatrixWorld": "world", "ImaginedEnv": "imagine"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'quatrix_world' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
