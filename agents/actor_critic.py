"""DreamerV3-style actor-critic, trained only inside imagination. Read top to bottom.

1. imagine H steps from real start states with the current actor
2. λ-returns from predicted rewards, continues and the slow critic's values
3. critic: symlog two-hot CE toward the returns (and its slow copy); with `agent.replay_critic`, also
   toward λ-returns along the replayed real rows (common.replay_lambda_returns, DreamerV3's replay loss)
4. actor: advantages (R - v) / max(1, P95 - P5), each step weighted by the predicted probability
   that the episode is still running, plus an entropy bonus (its scale raised while the entropy is
   below a floor: common.EntropyScale). The advantage's gradient reaches the actor one of two ways
   (`agent.actor_grad`):
   - reinforce: log π(a|s) x advantage (discrete or continuous actions);
   - dynamics (continuous actions): the advantage itself, differentiated through the imagined
     dynamics (reparameterised actions -> the world model's core -> reward, continue and value
     heads), as DreamerV1-3 do for continuous control. The world model and the slow critic are
     frozen for it: only the actor learns from this gradient.

`rollout` does 1–2 (with gradient only for `dynamics`); `losses` gives 3–4; the loop steps them
(Trainer.train_step in agents/trainer.py).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from quatrix_world.config import ConfigError
from quatrix_world.features import LatentFeatures

from .common import AgentBase, lambda_returns


@contextmanager
def frozen(module: torch.nn.Module):
    """Gradients flow through `module` to its inputs but not into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _detach(feat):
    return LatentFeatures(feat.index, feat.h.detach()) if isinstance(feat, LatentFeatures) else feat.detach()


class ActorCritic(AgentBase):
    def __init__(self, cfg, feat_dim, act_desc, latent=None):
        super().__init__(cfg, feat_dim, act_desc, latent)
        continuous = act_desc["kind"] != "discrete"
        if cfg.actor_grad == "dynamics" and not continuous:
            raise ConfigError("agent.actor_grad=dynamics needs continuous (Box) actions: a discrete action "
                              "has no reparameterised gradient — use agent.actor_grad=reinforce (or auto)")
        self.dynamics_grad = continuous and cfg.actor_grad in ("dynamics", "auto")

    def rollout(self, world, start_state) -> dict:
        cfg = self.cfg
        with torch.set_grad_enabled(self.dynamics_grad), frozen(world) if self.dynamics_grad else nullcontext():
            traj = world.imagine(start_state, self.actor, cfg.horizon, grad=self.dynamics_grad)   # [N, H]
            feat, states = self.imagined_features(world, traj)               # [N, H], [N, H+1]
            v = self.slow_critic.value(states)                               # [N, H+1]: one pass
            value, next_value = v[:, :-1], v[:, 1:]                          # v(s_t), v(s_{t+1})
            returns = lambda_returns(traj["reward"], traj["cont"], next_value, cfg.discount, cfg.lambda_)
        scale = self.retnorm(returns)
        adv = (returns - value.detach()) / scale                             # gradient only for dynamics
        b = {"feat": _detach(feat), "action": traj["action"].detach(), "weight": traj["weight"].detach(),
             "reward": traj["reward"].detach(), "value": value.detach(), "returns": returns.detach(),
             "scale": scale, "adv": adv.detach()}
        if self.dynamics_grad:
            b["objective"] = adv                    # differentiable w.r.t. the actor through the dynamics
        return b

    def losses(self, b: dict, epoch: int = 0) -> tuple[dict, dict]:
        dist = self.actor(b["feat"])
        entropy = dist.entropy()
        scale = self.entropy_scale.scale                        # adaptive: common.EntropyScale
        self.entropy_scale.observe(entropy, b["weight"])
        if "objective" in b:                                    # backprop through the dynamics
            gain = b["objective"]
        else:                                                   # REINFORCE
            gain = dist.log_prob(b["action"]) * b["adv"]
        actor_loss = -(b["weight"] * (gain + scale * entropy)).mean()
        critic_loss, critic_metrics = self.critic_losses(b)
        metrics = {**critic_metrics, "agent/entropy": entropy.mean().detach(), "agent/return": b["returns"].mean(),
                   "agent/imag_reward": b["reward"].mean(), "agent/return_scale": b["scale"],
                   "agent/advantage_std": b["adv"].std(), "agent/value": b["value"].mean(),
                   "agent/entropy_scale": scale}
        return {"loss_actor": actor_loss, "loss_critic": critic_loss}, metrics
