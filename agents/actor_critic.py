"""DreamerV3-style actor-critic, trained only inside imagination. Read top to bottom.

1. imagine H steps from real start states with the current actor
2. λ-returns from predicted rewards, continues and the slow critic's values
3. critic: symlog two-hot CE toward the returns (and its slow copy)
4. actor: REINFORCE with advantages (R - v) / max(1, P95 - P5) plus an entropy bonus,
   each step weighted by the predicted probability that the episode is still running.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import AgentBase, lambda_returns


class ActorCritic(AgentBase):
    def update(self, world, start_state) -> dict:
        cfg = self.cfg
        traj = world.imagine(start_state, self.actor, cfg.horizon)           # [N, H]
        feat, action, weight = traj["feat"], traj["action"], traj["weight"]
        with torch.no_grad():
            # next_feat[:, t] is feat[:, t+1]: one critic pass over the H+1 states gives both
            v = self.slow_critic.value(torch.cat([feat, traj["next_feat"][:, -1:]], 1))   # [N, H+1]
            value, next_value = v[:, :-1], v[:, 1:]                          # v(s_t), v(s_{t+1})
            returns = lambda_returns(traj["reward"], traj["cont"], next_value, cfg.discount, cfg.lambda_)
            scale = self.retnorm(returns)
            adv = (returns - value) / scale

        dist = self.actor(feat)
        logp = dist.log_prob(action)
        entropy = dist.entropy()
        actor_loss = -(weight * (logp * adv + cfg.entropy * entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.sync_grads(self.actor)
        actor_gnorm = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.actor_opt.step()

        critic_loss, critic_gnorm = self.critic_step(feat, returns, weight)
        return {
            "loss/actor": actor_loss.detach(), "loss/critic": critic_loss,
            "agent/entropy": entropy.mean().detach(), "agent/return": returns.mean(),
            "agent/imag_reward": traj["reward"].mean(), "agent/return_scale": scale,
            "agent/advantage_std": adv.std(), "agent/value": value.mean(),
            "agent/actor_gnorm": actor_gnorm, "agent/critic_gnorm": critic_gnorm,
        }
