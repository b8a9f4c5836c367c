"""Audio in pure torch: log-mel spectrogram (HTK mel scale) and QuatrixAudio.

    >>> wave = torch.sin(2 * math.pi * 1000 * torch.arange(16000) / 16000)
    >>> log_mel_spectrogram(wave, 16000, n_fft=400, hop_length=160, n_mels=64).shape
    torch.Size([1, 64, 101])

QuatrixAudio: waveform [B, N] (or log-mel [B, n_mels, frames] with ``is_mel=True``) -> groups of
``audio_patch`` frames -> LayerNorm + Linear patch embedding -> position embeddings -> bidirectional
Q-Compass blocks -> LN -> Linear -> tokens [B, n_tokens, out_dim].
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import bidirectional_blocks
from .config import QuatrixConfig

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "mel_center_frequencies", "log_mel_spectrogram",
           "QuatrixAudio"]


def hz_to_mel(f):
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    if isinstance(f, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    if isinstance(m, torch.Tensor):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _mel_points(n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    m = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    return mel_to_hz(m)


def mel_center_frequencies(n_mels: int, sample_rate: int, f_min: float = 0.0,
                           f_max: Optional[float] = None) -> torch.Tensor:
    """[n_mels] centre frequency (Hz) of each triangular mel filter."""
    f_max = sample_rate / 2 if f_max is None else f_max
    return _mel_points(n_mels, f_min, f_max)[1:-1].float()


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: Optional[float] = None) -> torch.Tensor:
    """[n_freqs, n_mels] triangular filters (HTK mel scale, peak 1, no area normalisation).

    ``n_freqs`` = n_fft // 2 + 1 bins spaced evenly over 0 .. sample_rate/2. Filter m rises from
    point m to its centre m+1 and falls to m+2 of n_mels+2 points evenly spaced in mel.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, "
                         f"sample_rate={sample_rate}")
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"n_freqs must be >= 2 and n_mels >= 1, got n_freqs={n_freqs}, n_mels={n_mels}")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)     # [F]
    pts = _mel_points(n_mels, f_min, f_max)                                     # [M+2]
    lo, ctr, hi = pts[:-2], pts[1:-1], pts[2:]                                  # [M]
    up = (freqs[:, None] - lo) / (ctr - lo)
    down = (hi - freqs[:, None]) / (hi - ctr)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int = 16000, n_fft: int = 400,
                        hop_length: int = 160, n_mels: int = 64, f_min: float = 0.0,
                        f_max: Optional[float] = None) -> torch.Tensor:
    """waveform [B, N] or [N] -> log(mel power + 1e-6) [B, n_mels, frames], frames = N // hop + 1.

    torch.stft with a periodic Hann window, centred frames (reflect padding; zero padding for clips
    shorter than n_fft / 2), power spectrum, mel filterbank.
    """
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2):
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"waveform must be [B, N] or [N], got {shape}")
    if waveform.dim() == 1:
        waveform = waveform[None]
    waveform = waveform.float()
    if waveform.shape[-1] < 1:
        raise ValueError("waveform is empty (N = 0 samples)")
    if hop_length <= 0 or n_fft <= 0:
        raise ValueError(f"n_fft and hop_length must be > 0, got n_fft={n_fft}, hop_length={hop_length}")
    window = torch.hann_window(n_fft, device=waveform.device, dtype=waveform.dtype)
    pad_mode = "reflect" if waveform.shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(waveform, n_fft=n_fft, hop_length=hop_length, window=window, center=True,
                      pad_mode=pad_mode, return_complex=True)                  # [B, F, frames]
    power = spec.real.square() + spec.imag.square()
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max).to(power)
    mel = torch.einsum("bft,fm->bmt", power, fb)
    return torch.log(mel + 1e-6)


class QuatrixAudio(nn.Module):
    def __init__(self, config: QuatrixConfig, out_dim: Optional[int] = None):
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.out_dim = out_dim or config.hidden_size
        self.n_mels, self.audio_patch = config.n_mels, config.audio_patch
        if config.audio_patch <= 0:
            raise ValueError(f"audio_patch must be > 0, got {config.audio_patch}")
        patch_dim = config.n_mels * config.audio_patch
        self.in_norm = nn.LayerNorm(patch_dim)
        self.embed = nn.Linear(patch_dim, width)
        self.pos = nn.Parameter(torch.randn(1, config.max_audio_tokens, width) * 0.02)
        self.blocks = bidirectional_blocks(width, config, config.audio_layers)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, self.out_dim)

    def mel(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        return log_mel_spectrogram(waveform, c.sample_rate, c.n_fft, c.hop_length, c.n_mels)

    def forward(self, audio: torch.Tensor, is_mel: bool = False) -> torch.Tensor:
        """waveform [B, N] / [N], or log-mel [B, n_mels, frames] with is_mel=True -> [B, n_tokens, out_dim]."""
        if is_mel:
            if audio.dim() == 2:
                audio = audio[None]
            if audio.dim() != 3 or audio.shape[1] != self.n_mels:
                raise ValueError(f"mel input must be [B, n_mels={self.n_mels}, frames], got {tuple(audio.shape)}")
            mel = audio.float()
        else:
            if audio.dim() == 3 and audio.shape[1] == self.n_mels:
                raise ValueError("got a [B, n_mels, frames] tensor as a waveform — pass is_mel=True")
            mel = self.mel(audio)
        B, M, Fr = mel.shape
        p = self.audio_patch
        pad = (-Fr) % p
        if pad:
            mel = F.pad(mel, (0, pad), value=math.log(1e-6))     # pad with log-silence
        n = mel.shape[-1] // p
        if n > self.config.max_audio_tokens:
            raise ValueError(f"audio gives {n} tokens > max_audio_tokens={self.config.max_audio_tokens} "
                             f"({Fr} frames / audio_patch={p}) — shorten the clip or raise max_audio_tokens")
        x = mel.reshape(B, M, n, p).permute(0, 2, 3, 1).reshape(B, n, p * M)   # frames-major per token
        x = self.embed(self.in_norm(x)) + self.pos[:, :n]
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x))

    def pool(self, audio: torch.Tensor, is_mel: bool = False) -> torch.Tensor:
        """-> [B, out_dim] (mean of the audio tokens)."""
        return self(audio, is_mel=is_mel).mean(1)
