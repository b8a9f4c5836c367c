"""QuatrixVision: Conv2d patches -> position embeddings -> bidirectional Q-Compass blocks -> LN -> Linear.

    >>> from quatrix_world import QuatrixConfig, QuatrixVision
    >>> vis = QuatrixVision(QuatrixConfig(hidden_size=64, q_rank=16, image_size=64, patch_size=16))
    >>> vis(torch.randn(2, 3, 64, 64)).shape        # 4x4 patches
    torch.Size([2, 16, 64])

Position embeddings are learned for the ``config.image_size`` grid and interpolated (bicubic on
the 2-D grid) for other image sizes, so one encoder reads 56x56, 64x64 and 224x224 images.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import bidirectional_blocks
from .config import QuatrixConfig

__all__ = ["QuatrixVision"]


class QuatrixVision(nn.Module):
    def __init__(self, config: QuatrixConfig, out_dim: Optional[int] = None):
        super().__init__()
        self.config = config
        width = config.vision_hidden_size or config.hidden_size
        p = config.patch_size
        if p <= 0:
            raise ValueError(f"patch_size must be > 0, got {p}")
        if config.image_size < p:
            raise ValueError(f"image_size ({config.image_size}) must be >= patch_size ({p})")
        self.width, self.patch_size = width, p
        self.out_dim = out_dim or config.hidden_size
        self.grid = config.image_size // p
        self.patch = nn.Conv2d(config.in_channels, width, kernel_size=p, stride=p, bias=True)
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, width) * 0.02)
        self.blocks = bidirectional_blocks(width, config, config.vision_layers)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, self.out_dim)

    def _check(self, pixel_values: torch.Tensor):
        c, p = self.config.in_channels, self.patch_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a float tensor [B, {c}, H, W], got {shape}")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be float (convert uint8 images first), got {pixel_values.dtype}")
        _, C, H, W = pixel_values.shape
        if C != c:
            raise ValueError(f"pixel_values has {C} channels but in_channels={c} (expected [B, {c}, H, W])")
        if H < p or W < p:
            raise ValueError(f"image {H}x{W} is smaller than one patch (patch_size={p})")
        if H % p or W % p:
            raise ValueError(f"image {H}x{W} is not divisible by patch_size={p} — resize or crop to a multiple of {p}")

    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        """[1, gh*gw, width] position embeddings for a gh x gw patch grid."""
        if gh == self.grid and gw == self.grid:
            return self.pos
        g = self.pos.reshape(1, self.grid, self.grid, self.width).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(gh, gw), mode="bicubic", align_corners=False)
        return g.permute(0, 2, 3, 1).reshape(1, gh * gw, self.width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] float -> patch tokens [B, (H/p)*(W/p), out_dim] (row-major patch order)."""
        self._check(pixel_values)
        x = self.patch(pixel_values)                       # [B, width, gh, gw]
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed(gh, gw)
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x))

    def pool(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, out_dim] (mean of the patch tokens)."""
        return self(pixel_values).mean(1)
