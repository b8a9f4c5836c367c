"""What both agents share: the actor, the symlog two-hot critic, λ-returns, return normalisation.

Narrow interface (docs/DESIGN.md): `agent.policy(features) -> Distribution`, `agent.act(features)`,
`agent.rollout(world, start_state) -> batch` and `agent.losses(batch, epoch) -> (losses, metrics)`.
The training loop owns the optimiser steps (Trainer.train_step in agents/trainer.py). Agents never see the env.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
from torch.distributions import Categorical, Independent, Normal

from quatrix_world.config import AgentConfig
from quatrix_world.encoders import mlp
from quatrix_world.features import FeatureLinear, LatentFeatures
from quatrix_world.latents import TwoHot, sample_action


def feature_mlp(feat_dim: int, hidden: int, out: int, layers: int, latent: tuple[int, int] | None) -> nn.Sequential:
    """`mlp` over the agent's features; with `latent` = (groups, classes) its first layer is a
    FeatureLinear, so it also reads `LatentFeatures` (z by index). Its first layer keeps the values mlp drew."""
    net = mlp(feat_dim, hidden, out, layers)
    if latent is not None:
        net[0] = FeatureLinear.from_linear(net[0], *latent)
    return net


class Actor(nn.Module):
    """features -> Categorical (1% unimix) for discrete actions, Normal in env units for Box
    (mean inside the box, std between 0.1 and 1 half-widths of it).
    Features are a tensor [..., F], or `LatentFeatures` when built with `latent`."""

    def __init__(self, feat_dim: int, act_desc: dict, hidden: int, layers: int, unimix: float = 0.01,
                 latent: tuple[int, int] | None = None):
        super().__init__()
        self.act_desc, self.unimix = act_desc, unimix
        if act_desc["kind"] == "discrete":
            self.net = feature_mlp(feat_dim, hidden, act_desc["n"], layers, latent)
        else:
            d = act_desc["dim"]
            self.net = feature_mlp(feat_dim, hidden, 2 * d, layers, latent)
            self.register_buffer("low", torch.tensor(act_desc["low"], dtype=torch.float32))
            self.register_buffer("high", torch.tensor(act_desc["high"], dtype=torch.float32))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @property
    def reads_latent_index(self) -> bool:
        """Built with `latent`: world.imagine then hands it LatentFeatures."""
        return isinstance(self.net[0], FeatureLinear)

    def forward(self, feat):
        out = self.net(feat)
        if self.act_desc["kind"] == "discrete":
            probs = out.softmax(-1)
            probs = (1 - self.unimix) * probs + self.unimix / probs.shape[-1]
            return Categorical(probs=probs, validate_args=False)   # valid by construction
        mu, s = out.chunk(2, -1)
        half = (self.high - self.low) / 2
        mean = self.low + (torch.tanh(mu) + 1) * half
        # DreamerV3's bounded std: 0.1 to 1 half-widths of the box, so neither a REINFORCE nor a
        # dynamics gradient can blow the noise up past the box or shrink it to nothing
        std = half * (0.9 * torch.sigmoid(s + 2.0) + 0.1)
        return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)

    def act(self, feat, deterministic: bool = False):
        dist = self(feat)
        if deterministic:
            a = dist.probs.argmax(-1) if isinstance(dist, Categorical) else dist.mean
        else:
            a = sample_action(dist)
        if self.act_desc["kind"] != "discrete":
            a = torch.max(torch.min(a, self.high), self.low)
        return a


class Critic(nn.Module):
    """features -> value, as symlog two-hot logits; a slow EMA copy gives stable targets."""

    def __init__(self, feat_dim: int, hidden: int, layers: int, bins: int = 255,
                 latent: tuple[int, int] | None = None):
        super().__init__()
        self.net = feature_mlp(feat_dim, hidden, bins, layers, latent)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.twohot = TwoHot(bins)

    def forward(self, feat):
        return self.net(feat)

    def value(self, feat):
        return self.twohot.decode(self.net(feat))


def lambda_returns(reward, cont, next_value, discount: float, lam: float):
    """λ-returns, computed backwards. All [N, H]; next_value[:, t] = v(s_{t+1}).

    R_t = r_t + γ c_t ((1 - λ) v_{t+1} + λ R_{t+1}),   R_{H-1} bootstraps with v_H.
    """
    H = reward.shape[1]
    out = torch.empty_like(reward)
    last = next_value[:, -1]
    for t in reversed(range(H)):
        last = reward[:, t] + discount * cont[:, t] * ((1 - lam) * next_value[:, t] + lam * last)
        out[:, t] = last
    return out


def replay_lambda_returns(reward, terminated, next_valid, value, discount: float, lam: float):
    """λ-returns along real replayed rows, all [B, T]: reward[:, t] = r_{t+1} (after action t),
    terminated[:, t] = the episode ended after action t, next_valid[:, t] = row t+1 continues row t's
    episode, value[:, t] = v(s_t). -> (returns, weight).

    R_t = r_t + γ (1 - term_t) ((1 - λ) v_{t+1} + λ R_{t+1}). A row whose next state is not in the window
    (the window's last row, an episode cut by a time limit) and that did not terminate has no target:
    R_t = v_t, so the row before it bootstraps with v_t, and its weight is 0.
    """
    T = reward.shape[1]
    has_target = next_valid | terminated
    alive = (~terminated).to(reward.dtype)
    out = torch.empty_like(reward)
    nxt_v = nxt_R = value[:, -1]                      # only read where has_target (so not at t = T-1)
    for t in reversed(range(T)):
        R = reward[:, t] + discount * alive[:, t] * ((1 - lam) * nxt_v + lam * nxt_R)
        out[:, t] = torch.where(has_target[:, t], R, value[:, t])
        nxt_v, nxt_R = value[:, t], out[:, t]
    return out, has_target.to(reward.dtype)


class ReturnNorm:
    """Scale = EMA of the 5–95 percentile range of returns, floored at 1 (DreamerV3)."""

    def __init__(self, decay: float = 0.99):
        self.decay, self.scale = decay, None

    def __call__(self, returns):
        flat = returns.detach().flatten().float()
        rng = torch.quantile(flat, 0.95) - torch.quantile(flat, 0.05)
        self.scale = rng if self.scale is None else self.decay * self.scale + (1 - self.decay) * rng
        return torch.clamp(self.scale, min=1.0)

    def state_dict(self):
        return {"scale": self.scale if self.scale is not None else torch.tensor(float("nan"))}

    def load_state_dict(self, d):
        s = d["scale"]
        self.scale = None if torch.isnan(s) else s


class EntropyScale(nn.Module):
    """The entropy bonus's scale, raised while the policy's entropy is below a floor.

    A fixed scale (DreamerV3's 3e-4 under return normalisation) lets a discrete policy collapse
    before a sparse reward is found. Here the scale starts at `base` and, after each update,
    log(scale) += rate x (target - entropy), clamped to [base, base x max_ratio]: it grows while
    the entropy is below `target` (= `fraction` x log(n_actions)) and falls back to `base` above
    it. Continuous actions (whose entropy has no fixed range) and fraction 0 keep `base`.
    """

    def __init__(self, base: float, act_desc: dict, fraction: float, rate: float, max_ratio: float):
        super().__init__()
        adaptive = act_desc["kind"] == "discrete" and fraction > 0 and rate > 0 and base > 0
        self.target = fraction * math.log(act_desc["n"]) if adaptive else None
        self.rate, self.base = rate, base
        self.lo, self.hi = (math.log(base), math.log(base * max_ratio)) if adaptive else (None, None)
        # not in the state dict (checkpoints from before it load unchanged); saved in extra_state
        self.register_buffer("log_scale", torch.tensor(self.lo if adaptive else 0.0), persistent=False)
        self.entropy = None

    @property
    def scale(self):
        return self.log_scale.exp() if self.target is not None else self.base

    def observe(self, entropy: torch.Tensor, weight: torch.Tensor) -> None:
        """The imagined steps' entropies [N, H] and weights (the update's own batch)."""
        self.entropy = ((entropy * weight).sum() / weight.sum().clamp(min=1e-8)).detach().clone()  # own memory (CUDA graphs)

    @torch.no_grad()
    def step(self) -> None:
        if self.target is not None and self.entropy is not None:
            self.log_scale.add_(self.rate * (self.target - self.entropy)).clamp_(self.lo, self.hi)
        self.entropy = None


class AgentBase(nn.Module):
    """Actor + critic (+ its slow copy) and their optimisers.

    Subclasses implement `rollout(world, start_state) -> batch` (imagination and its targets, no
    gradient) and `losses(batch, epoch) -> ({"loss_actor": ..., "loss_critic": ...}, metrics)`.
    The loop backpropagates each `loss_<name>` into `optimizers[name]`'s module, clips, steps, and
    repeats `epochs` times; then `after_update()` moves the slow copies.
    """

    epochs = 1                          # passes of `losses` over one rollout batch

    def __init__(self, cfg: AgentConfig, feat_dim: int, act_desc: dict, latent: tuple[int, int] | None = None):
        super().__init__()
        self.cfg, self.act_desc = cfg, act_desc
        self.actor = Actor(feat_dim, act_desc, cfg.hidden_size, cfg.num_layers, latent=latent)
        self.critic = Critic(feat_dim, cfg.hidden_size, cfg.num_layers, latent=latent)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, eps=1e-5)
        self.retnorm = ReturnNorm()
        self.entropy_scale = EntropyScale(self.entropy_base, act_desc, cfg.entropy_target, cfg.entropy_rate,
                                          cfg.entropy_max_ratio)

    @property
    def entropy_base(self) -> float:
        return self.cfg.entropy

    @property
    def optimizers(self) -> dict:
        """{loss name: (optimiser, the module its loss trains)}."""
        return {"actor": (self.actor_opt, self.actor), "critic": (self.critic_opt, self.critic)}

    def imagined_features(self, world, traj):
        """An imagined rollout [N, H] -> (its features at steps 0..H-1, the H+1 states 0..H), in
        the form the actor and critic read fastest: `LatentFeatures` (z by index) when built with
        `latent`, else dense tensors. State H is next_feat[:, H-1]; next_feat[:, t] is feat[:, t+1]."""
        if not self.actor.reads_latent_index:
            return traj["feat"], torch.cat([traj["feat"], traj["next_feat"][:, -1:]], 1)
        h = world.split_features(traj["feat"]).h
        last_h = world.split_features(traj["next_feat"][:, -1:]).h
        feat = LatentFeatures(traj["z_index"], h)
        return feat, LatentFeatures(torch.cat([traj["z_index"], traj["next_z_index"][:, -1:]], 1),
                                    torch.cat([h, last_h], 1))

    def policy(self, feat):
        return self.actor(feat)

    @torch.no_grad()
    def act(self, feat, deterministic: bool = False):
        return self.actor.act(feat, deterministic)

    @torch.no_grad()
    def replay_targets(self, feat, reward, terminated, next_valid) -> dict:
        """Real replayed rows [B, T] (features [z_t, h_{t-1}] from the world model's update) -> the
        critic's targets along them for `critic_losses`: λ-returns of the real rewards and
        terminations, bootstrapped by the slow critic."""
        value = self.slow_critic.value(feat)
        returns, weight = replay_lambda_returns(reward, terminated, next_valid, value, self.cfg.discount,
                                                self.cfg.lambda_)
        return {"feat": feat, "returns": returns, "weight": weight, "value": value}

    def critic_losses(self, b: dict) -> tuple[torch.Tensor, dict]:
        """The critic's loss on an update's batch: on the imagined steps, plus `agent.replay_critic` x
        the same loss on the replayed real rows when the batch has them (`replay_targets`)."""
        loss = self.critic_loss(b["feat"], b["returns"], b["weight"], slow_value=b["value"])
        if "replay" not in b:
            return loss, {}
        r = b["replay"]
        replay = self.critic_loss(r["feat"], r["returns"], r["weight"], slow_value=r["value"])
        return loss + self.cfg.replay_critic * replay, {"agent/replay_critic_loss": replay.detach()}

    def critic_loss(self, feat, returns, weight, slow_value=None):
        """Two-hot CE of the critic against λ-returns and against its slow copy's value
        (`slow_value`, when the rollout already computed slow_critic.value(feat))."""
        logits = self.critic(feat)
        with torch.no_grad():
            slow = self.slow_critic.value(feat) if slow_value is None else slow_value
        return ((self.critic.twohot.loss(logits, returns) + self.critic.twohot.loss(logits, slow)) * weight).mean()

    @torch.no_grad()
    def after_update(self) -> None:
        for p, q in zip(self.critic.parameters(), self.slow_critic.parameters()):
            q.lerp_(p, self.cfg.critic_ema)
        self.entropy_scale.step()

    def extra_state(self) -> dict:
        return {"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "retnorm": self.retnorm.state_dict(), "entropy_log_scale": self.entropy_scale.log_scale}

    def load_extra_state(self, d: dict) -> None:
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        self.retnorm.load_state_dict(d["retnorm"])
        if "entropy_log_scale" in d and self.entropy_scale.target is not None:   # absent before it existed
            self.entropy_scale.log_scale.copy_(d["entropy_log_scale"])


