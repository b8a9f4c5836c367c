"""Quatrix World: Q-Compass models (text, vision, audio) and world models built on them.

Imports here stay light (torch only; no gymnasium / torchrl).
"""
__version__ = "0.1.0"

from .config import QuatrixConfig
from .qcompass import QCompass, QCompassBi, KVCache, LayerCaches, MHA, cache_bytes_per_token
from .blocks import QuatrixBlock, QuatrixStack
from .lm import QuatrixLM
from .vision import QuatrixVision
from .audio import QuatrixAudio, log_mel_spectrogram, mel_filterbank

_LAZY = {"QuatrixWorld": ("world", "QuatrixWorld"), "WorldConfig": ("config", "WorldConfig"),
         "Config": ("config", "Config"), "load_config": ("config", "load_config"),
         "ImaginedEnv": ("imagine", "ImaginedEnv")}


def __getattr__(name):          # the world model and torchrl-based parts load on first use
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'quatrix_world' has no attribute '{name}'")
