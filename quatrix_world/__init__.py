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
