"""GRPO inside the world model: group-relative advantages from branched imagined rollouts.

From each start state, branch G rollouts through the same KV cache (`world.imagine(...,
group_size=G)`) and score each by its discounted imagined return (optionally bootstrapped by the
critic at the horizon). The rollout's group advantage is (R - mean_group) over the scores'
percentile range floored at 1, as actor-critic scales its advantages (`agent.grpo_advantage:
return_scale`; `group_std` divides by the group's std + `agent.grpo_std_floor` instead, GRPO's
original form). Each step's advantage is (1 - m) x that + m x (λ-return_t - v(s_t)) / scale, with
m = `agent.grpo_critic_mix` (0.5; 0 = the group's alone): the group credits the whole rollout, the
critic each step (a key picked up 20 steps before the goal is credited once the critic values
holding it).
Then a PPO-style clipped ratio loss for `agent.epochs` passes, an entropy bonus (raised while the
entropy is below a floor: common.EntropyScale), an optional KL to a slow reference policy, and steps
after a predicted termination masked by the continue probability. The critic (same as
actor-critic's) is trained on λ-returns once per update (the first pass); it serves the bootstrap
and the critic mix.
"""
from __future__ import annotations

import copy

import torch
from torch.distributions import kl_divergence

from .common import AgentBase, lambda_returns


class GRPO(AgentBase):
    def __init__(self, cfg, feat_dim, act_desc, latent=None):
        super().__init__(cfg, feat_dim, act_desc, latent)
        self.ref_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.epochs = cfg.epochs

    @property
    def entropy_base(self) -> float:
        return self.cfg.grpo_entropy

    @torch.no_grad()
    def rollout(self, world, start_state) -> dict:
        cfg, G, H = self.cfg, self.cfg.group_size, self.cfg.horizon
        traj = world.imagine(start_state, self.actor, H, group_size=G)       # [N*G, H]
        feat, states = self.imagined_features(world, traj)                   # [N*G, H], [N*G, H+1]
        weight = traj["weight"]
        N = weight.shape[0] // G
        disc = cfg.discount ** torch.arange(H, dtype=weight.dtype, device=weight.device)
        score = (disc * weight * traj["reward"]).sum(1)                       # [N*G]
        v = self.slow_critic.value(states)        # [N*G, H+1]: one pass gives v(s_t) and v(s_{t+1})
        value, next_value = v[:, :-1], v[:, 1:]
        if cfg.bootstrap:
            score = score + cfg.discount ** H * weight[:, -1] * traj["cont"][:, -1] * next_value[:, -1]
        grouped = score.reshape(N, G)
        adv = self.advantages(grouped).reshape(N * G, 1).expand(-1, H)       # [N*G, H]: one per rollout
        returns = lambda_returns(traj["reward"], traj["cont"], next_value, cfg.discount, cfg.lambda_)
        if cfg.grpo_critic_mix > 0:     # per-step credit: λ-return minus the critic's value, as actor-critic
            scale = self.retnorm.scale.clamp(min=1.0) if cfg.grpo_advantage == "return_scale" else self.retnorm(returns)
            adv = (1 - cfg.grpo_critic_mix) * adv + cfg.grpo_critic_mix * (returns - value) / scale
        return {"feat": feat, "action": traj["action"], "weight": weight, "old_logp": traj["logp"],
                "reward": traj["reward"], "returns": returns, "value": value, "score": score, "grouped": grouped,
                "adv": adv}

    def advantages(self, grouped: torch.Tensor) -> torch.Tensor:
        """The group-relative advantages of the scores [N, G] of N groups of G rollouts.

        return_scale (the default): (R - mean_group) / max(1, P95 - P5), the percentile range of the
          scores (an EMA, actor-critic's ReturnNorm). No per-group std (as Dr. GRPO): one success in a
          group of failures gets its return's difference, not a unit-size push, so the entropy bonus can hold.
        group_std (GRPO's original): (R - mean_group) / (std_group + grpo_std_floor). The floor keeps
          groups whose rollouts differ only by prediction noise (1e-6) from getting unit-size advantages.
        """
        centred = grouped - grouped.mean(1, keepdim=True)
        if self.cfg.grpo_advantage == "return_scale":
            return centred / self.retnorm(grouped)
        return centred / (grouped.std(1, keepdim=True) + self.cfg.grpo_std_floor)

    def losses(self, b: dict, epoch: int = 0) -> tuple[dict, dict]:
        cfg, feat, weight, adv = self.cfg, b["feat"], b["weight"], b["adv"]
        dist = self.actor(feat)
        ratio = (dist.log_prob(b["action"]) - b["old_logp"]).exp()
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
        entropy = dist.entropy()
        scale = self.entropy_scale.scale                        # adaptive: common.EntropyScale
        if epoch == 0:
            self.entropy_scale.observe(entropy, weight)
        loss = -(weight * (surrogate + scale * entropy)).sum() / weight.sum().clamp(min=1)
        if cfg.kl_coef > 0:
            kl = kl_divergence(dist, self.ref_actor(feat))
            loss = loss + cfg.kl_coef * (weight * kl).sum() / weight.sum().clamp(min=1)
        losses, critic_metrics = {"loss_actor": loss}, {}
        if epoch == 0:                  # the critic does not depend on the actor: train it once
            losses["loss_critic"], critic_metrics = self.critic_losses(b)
        with torch.no_grad():
            metrics = {**critic_metrics, "agent/entropy": entropy.mean(),
                       "agent/group_score": b["score"].mean(), "agent/group_std": b["grouped"].std(1).mean(),
                       "agent/clip_frac": ((ratio - 1).abs() > cfg.clip).float().mean(),
                       "agent/imag_reward": b["reward"].mean(), "agent/entropy_scale": scale}
        return losses, metrics

    @torch.no_grad()
    def after_update(self) -> None:
        super().after_update()
        for p, q in zip(self.actor.parameters(), self.ref_actor.parameters()):
            q.lerp_(p, self.cfg.critic_ema)
