"""Imagination the torchrl way: a QuatrixWorld as an EnvBase, so `env.rollout(H, policy)` dreams.

    state = world.observe(context_batch)           # real context -> KV cache
    env = ImaginedEnv(world, state)
    td = env.rollout(16, policy)                    # policy: a TensorDictModule reading "feat"

Observations are the agent features [z, h] under "feat"; reward is the predicted reward;
terminated is sampled from the continue head (or thresholded at 0.5 with
sample_termination=False). Each step feeds one token through the KV cache. All rollouts restart
together (they share one cache length), so a partial reset is refused with a clear error.
Also `render_imagination(world, state, policy, horizon)` -> decoded frames.
"""
from __future__ import annotations

import contextlib

import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from .errors import UsageError
from .world import QuatrixWorld


class ImaginedEnv(EnvBase):
    def __init__(self, world: QuatrixWorld, start_state: dict, sample_termination: bool = True):
        n = start_state["z"].shape[0]
        super().__init__(batch_size=torch.Size([n]))
        self.world, self.start_state, self.sample_termination = world, start_state, sample_termination
        self.state = None
        self.observation_spec = Composite(feat=Unbounded((n, world.feat_dim)), shape=(n,))
        a = world.act_desc
        if a["kind"] == "discrete":
            self.action_spec = Categorical(a["n"], shape=(n,), dtype=torch.int64)
        else:
            self.action_spec = Bounded(torch.tensor(a["low"]).expand(n, -1), torch.tensor(a["high"]).expand(n, -1),
                                       shape=(n, a["dim"]))
        self.reward_spec = Unbounded((n, 1))

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        partial = tensordict.get("_reset", None) if tensordict is not None else None
        if partial is not None and not bool(partial.all()):
            raise UsageError("ImaginedEnv restarts all rollouts together (they share one KV-cache length) — "
                             "use rollout(..., break_when_any_done=True) or ImaginedEnv(sample_termination=False)")
        s = self.start_state
        self.state = dict(s, caches=s["caches"].clone())
        n = self.batch_size[0]
        feat = self.world.features(self.state["z"], self.state["h"])
        return TensorDict({"feat": feat, "done": torch.zeros(n, 1, dtype=torch.bool),
                           "terminated": torch.zeros(n, 1, dtype=torch.bool)}, batch_size=self.batch_size)

    def _step(self, tensordict: TensorDict) -> TensorDict:
        with self._own_rng():
            nxt = self.world.step(self.state, tensordict["action"])
            term = torch.bernoulli(1 - nxt["cont"]).bool() if self.sample_termination else nxt["cont"] < 0.5
        self.state = nxt
        return TensorDict({"feat": self.world.features(nxt["z"], nxt["h"]),
                           "reward": nxt["reward"].unsqueeze(-1),
                           "done": term.unsqueeze(-1), "terminated": term.unsqueeze(-1)},
                          batch_size=self.batch_size)

    def _set_seed(self, seed):
        """`env.set_seed(s)`: the imagined draws (latents, terminations) come from this env's own RNG
        stream seeded with s; the global torch RNG is left as it was. Unseeded, they use the global one."""
        self._rng = None
        if seed is not None:
            with torch.random.fork_rng(devices=self._cuda()):
                torch.manual_seed(int(seed))            # seeds the CPU and (inside the fork) the GPU stream
                self._rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._cuda()])
        return seed

    def _cuda(self) -> list:
        return [self.world.device] if self.world.device.type == "cuda" else []

    @contextlib.contextmanager
    def _own_rng(self):
        if getattr(self, "_rng", None) is None:
            yield
            return
        with torch.random.fork_rng(devices=self._cuda()):
            cpu, gpus = self._rng
            torch.set_rng_state(cpu)
            for d, st in zip(self._cuda(), gpus):
                torch.cuda.set_rng_state(st, d)
            yield
            self._rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._cuda()])


@torch.no_grad()
def render_imagination(world: QuatrixWorld, start_state: dict, policy, horizon: int, key: str | None = None):
    """Imagine `horizon` steps with `policy(feat) -> Distribution` and decode each step's latent.

    Returns a list of [N, H, W, C] uint8 arrays (one per step) for the image key `key`.
    """
    key = key or next((k for k, d in world.obs_desc.items() if d["kind"] == "image"), None)
    if key is None:
        raise UsageError("the world model has no image observation to render")
    traj = world.imagine(start_state, policy, horizon)
    return [world.decode(*world.split_features(traj["next_feat"][:, t]))[key].numpy() for t in range(horizon)]
