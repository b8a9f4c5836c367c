"""The agent's features [z, h] given by index, and the first layer that reads them that way.

z is one-hot: `latent_groups` groups of `latent_classes` classes, flattened (see `Features` in
world.py). A Linear over [z, h] is therefore the sum of one weight column per group (the columns
the one-hots select) plus a Linear over h:

    W [z, h] + b  =  sum_g W[:, g * C + index_g]  +  W[:, G * C:] h + b

`LatentFeatures(index, h)` carries z as its class indices [..., G]; `FeatureLinear` takes either
form. Given indices it does G additions per output instead of G * C multiply-adds (32 against
1,024 at the default sizes), in the forward pass and in the weight gradient. Imagination produces
the indices anyway (it draws them), so the agents train and act in imagination on them; the dense
tensor stays the public form and the reference path (`FeatureLinear(dense)`), and a test holds
both to the same values and gradients.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class LatentFeatures(NamedTuple):
    """Features with z as class indices: index [..., G] (int64), h [..., H]."""
    index: torch.Tensor
    h: torch.Tensor

    def dense(self, classes: int) -> torch.Tensor:
        """The same features as the dense tensor [..., G * classes + H]."""
        z = F.one_hot(self.index, classes).to(self.h.dtype).flatten(-2)
        return torch.cat([z, self.h], -1)


def latent_index(z: torch.Tensor, groups: int) -> torch.Tensor:
    """One-hot z [..., G * C] -> its class indices [..., G]."""
    return z.reshape(*z.shape[:-1], groups, -1).argmax(-1)


class FeatureLinear(nn.Linear):
    """An nn.Linear over features [z, h] (z one-hot, `groups` x `classes`) that also takes
    `LatentFeatures`; the same function, parameters and state dict either way."""

    def __init__(self, groups: int, classes: int, h_dim: int, out: int):
        super().__init__(groups * classes + h_dim, out)
        self.groups, self.classes, self.z_dim = groups, classes, groups * classes
        self.register_buffer("offsets", torch.arange(groups) * classes, persistent=False)

    @classmethod
    def from_linear(cls, lin: nn.Linear, groups: int, classes: int) -> "FeatureLinear":
        """The same layer (its weight and bias) as a FeatureLinear."""
        layer = cls(groups, classes, lin.in_features - groups * classes, lin.out_features)
        layer.load_state_dict(lin.state_dict())
        return layer

    def forward(self, x) -> torch.Tensor:
        if isinstance(x, LatentFeatures):
            return self._by_index(x)
        return super().forward(x)                                                    # the reference

    def _by_index(self, f: LatentFeatures) -> torch.Tensor:
        lead = f.index.shape[:-1]
        rows = (f.index + self.offsets).reshape(-1)                                   # [N * G]
        bags = torch.arange(0, rows.numel(), self.groups, device=rows.device)         # one bag per row
        table = self.weight[:, :self.z_dim].t().contiguous()                          # [G * C, out]: a row per class
        z_part = F.embedding_bag(rows, table, bags, mode="sum")                      # [N, out]
        return F.linear(f.h, self.weight[:, self.z_dim:], self.bias) + z_part.reshape(*lead, -1)
