"""DreamerV3-style actor-critic, trained only inside imagination. Read top to bottom.

1. imagine H steps from real start states with the current actor
2. λ-returns from predicted rewards, continues and the slow critic's values
3. critic: symlog two-hot CE toward the returns (and its slow copy)
4. actor: REINFORCE with advantages (R - v) / max(1, P95 - P5) plus an entropy bonus (its scale
   raised while the entropy is below a floor: common.EntropyScale), each step weighted by the predicted probability that the episode is still running.

`rollout` does 1–2 without gradient; `losses` gives 3–4; the loop steps them (Trainer.train_step in agents/trainer.py).
"""
from __future__ import annotations

import torch

from .common import AgentBase, lambda_returns


class ActorCritic(AgentBase):
    @torch.no_grad()
    def rollout(self, world, start_state) -> dict:
        cfg = self.cfg
        traj = world.imagine(start_state, self.actor, cfg.horizon)           # [N, H]
        feat, states = self.imagined_features(world, traj)                   # [N, H], [N, H+1]
        v = self.slow_critic.value(states)                                   # [N, H+1]: one pass
        value, next_value = v[:, :-1], v[:, 1:]                              # v(s_t), v(s_{t+1})
        returns = lambda_returns(traj["reward"], traj["cont"], next_value, cfg.discount, cfg.lambda_)
        scale = self.retnorm(returns)
        return {"feat": feat, "action": traj["action"], "weight": traj["weight"], "reward": traj["reward"],
                "value": value, "returns": returns, "scale": scale, "adv": (returns - value) / scale}

    def losses(self, b: dict, epoch: int = 0) -> tuple[dict, dict]:
        cfg = self.cfg
        dist = self.actor(b["feat"])
        logp = dist.log_prob(b["action"])
        entropy = dist.entropy()
        scale = self.entropy_scale.scale                        # adaptive: common.EntropyScale
        self.entropy_scale.observe(entropy, b["weight"])
        actor_loss = -(b["weight"] * (logp * b["adv"] + scale * entropy)).mean()
        critic_loss = self.critic_loss(b["feat"], b["returns"], b["weight"], slow_value=b["value"])
        metrics = {"agent/entropy": entropy.mean().detach(), "agent/return": b["returns"].mean(),
                   "agent/imag_reward": b["reward"].mean(), "agent/return_scale": b["scale"],
                   "agent/advantage_std": b["adv"].std(), "agent/value": b["value"].mean(),
                   "agent/entropy_scale": scale}
        return {"loss_actor": actor_loss, "loss_critic": critic_loss}, metrics
