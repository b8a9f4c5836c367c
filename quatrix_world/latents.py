"""Discrete latents and the DreamerV3 numeric tools: symlog, two-hot, categorical KL."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (torch.exp(x.abs()) - 1)


def unimix_probs(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """softmax(logits) with `unimix` of a uniform distribution mixed in; probabilities [..., C]."""
    probs = logits.softmax(-1)
    return probs if unimix <= 0 else (1 - unimix) * probs + unimix / probs.shape[-1]


def unimix_logits(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """`unimix_probs` as log-probs. [..., C]"""
    if unimix <= 0:
        return logits.log_softmax(-1)
    return unimix_probs(logits, unimix).log()


def sample_index(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from probabilities [..., C] -> indices [...] (inverse CDF).

    One uniform per row against the running sum: several times cheaper than torch.multinomial on
    the many short rows of a categorical latent, and the same distribution.
    """
    cdf = probs.detach().cumsum(-1)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=cdf.dtype)
    u = u * cdf[..., -1:]                                     # rows need not sum to exactly 1
    return (cdf < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def sample_action(dist: torch.distributions.Distribution) -> torch.Tensor:
    """A draw from `dist`: the inverse-CDF draw for a Categorical; with grad enabled, a
    reparameterisable one (Normal) is drawn with `rsample`, so the sample carries the policy's
    gradient (backprop through the dynamics)."""
    if isinstance(dist, torch.distributions.Categorical):
        return sample_index(dist.probs)
    return dist.rsample() if torch.is_grad_enabled() and dist.has_rsample else dist.sample()


def onehot_like(idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Class indices [...] -> one-hots [..., C] with the shape, dtype and device of `like`."""
    return torch.zeros_like(like).scatter_(-1, idx.unsqueeze(-1), 1.0)


def onehot_sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-hot draws from probabilities [..., C] -> [..., C], without gradient (imagination)."""
    return onehot_like(sample_index(probs, generator), probs)


def sample_onehot(logp: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through one-hot sample from log-probs [..., G, C] -> [..., G, C]."""
    probs = logp.exp()
    onehot = onehot_sample(probs, generator)
    if not (torch.is_grad_enabled() and probs.requires_grad):
        return onehot                    # no gradient to pass straight through (imagination, acting)
    return onehot + probs - probs.detach()


def mode_onehot(logp: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logp.argmax(-1), logp.shape[-1]).to(logp.dtype)


def categorical_kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over groups: [..., G, C] -> [...]."""
    return (logp.exp() * (logp - logq)).sum(-1).sum(-1)


def categorical_entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1).sum(-1)


class TwoHot:
    """Two-hot encoding over symlog-spaced bins (DreamerV3): regress any scale by classification."""

    def __init__(self, num_bins: int = 255, low: float = -20.0, high: float = 20.0):
        self.bins = torch.linspace(low, high, num_bins)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [...] (raw scale) -> target probs [..., num_bins]."""
        bins = self.bins.to(x.device)
        y = symlog(x).clamp(bins[0], bins[-1])
        idx = torch.bucketize(y, bins).clamp(1, len(bins) - 1)   # bins[idx-1] <= y <= bins[idx]
        lo, hi = bins[idx - 1], bins[idx]
        w_hi = ((y - lo) / (hi - lo)).clamp(0, 1)
        target = torch.zeros(*y.shape, len(bins), device=x.device, dtype=x.dtype)
        target.scatter_(-1, (idx - 1).unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
        target.scatter_add_(-1, idx.unsqueeze(-1), w_hi.unsqueeze(-1))
        return target

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., num_bins] -> expected value on the raw scale [...]."""
        return symexp((logits.softmax(-1) * self.bins.to(logits.device)).sum(-1))

    def loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the two-hot target of x: [...]."""
        return -(self.encode(x.detach()) * logits.log_softmax(-1)).sum(-1)
