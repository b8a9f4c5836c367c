"""Acting through the world model: the policy a running agent uses in the real env.

`OnlinePolicy` (one env) and `play_episodes` (several episodes in lockstep, for evaluation) feed each
observation through `QuatrixWorld.observe_step`, one cached core step per env step. `LanePolicy`
(batched envs) and `window_features` recompute the context window: the reference path.
"""
from __future__ import annotations

from collections import deque

import torch
from tensordict import TensorDict

from envs import render_frame
from quatrix_world.errors import UsageError
from quatrix_world.world import QuatrixWorld


def window_features(world: QuatrixWorld, z: torch.Tensor, zs=None, acts=None) -> torch.Tensor:
    """Features [N, F] of latents z [N, Z] after context tokens zs [N, T, Z], acts [N, T, ...] with
    positions from 0, exactly like a replay window (no context: h0). The recompute-everything
    reference for `QuatrixWorld.observe_step` (and the acting path of batched lanes)."""
    if zs is None:
        h = world.h0.expand(z.shape[0], -1)
    else:
        h = world.run_core(zs, acts, torch.zeros(zs.shape[:2], dtype=torch.bool, device=zs.device))[:, -1]
    return world.features(z, h)


class OnlinePolicy:
    """Runs the world model on the real episode so far and asks the agent for an action.

    One cached core step per env step (`QuatrixWorld.observe_step`): the context holds the
    episode's last window // 2 to `window` (z, a) tokens with positions from 0, like a replay
    window; z is the posterior's mode so acting is deterministic given obs.
    """

    def __init__(self, world: QuatrixWorld, agent, window: int):
        self.world, self.agent, self.window = world, agent, window
        self.reset()

    def reset(self):
        self.state, self.last_action = None, None

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        """[1, F] features of the current step's observation {key: [...]} given this episode's context."""
        dev = self.world.device
        obs = {k: obs[k][None].to(dev) for k in self.world.obs_desc}
        if self.state is None:
            self.state = self.world.acting_state(1, self.window)
            return self.world.observe_step(self.state, obs)
        return self.world.observe_step(self.state, obs, self.last_action[None].to(dev))

    @torch.no_grad()
    def act(self, obs: dict, deterministic: bool = False) -> torch.Tensor:
        return self.agent.act(self.features(obs), deterministic)[0].cpu()

    def record(self, action):
        self.last_action = action.clone()


class LanePolicy:
    """Acting for the N lanes of a batched env (lanes reset on their own, so each keeps its own
    context): one batched encode, then the context of each lane recomputed over its last
    `window` tokens (`window_features`)."""

    def __init__(self, world: QuatrixWorld, agent, window: int, num_lanes: int):
        self.world, self.agent, self.window = world, agent, window
        self.z = [deque(maxlen=window) for _ in range(num_lanes)]
        self.a = [deque(maxlen=window) for _ in range(num_lanes)]

    def reset_lane(self, i: int) -> None:
        self.z[i].clear()
        self.a[i].clear()

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        dev = self.world.device
        z = self.world.encode_mode({k: v.to(dev) for k, v in obs.items()})              # [N, Z]
        self._pending = z
        feats = []
        for i in range(z.shape[0]):
            if self.z[i]:
                ctx = torch.stack(list(self.z[i]))[None], torch.stack(list(self.a[i]))[None].to(dev)
                feats.append(window_features(self.world, z[i:i + 1], *ctx))
            else:
                feats.append(window_features(self.world, z[i:i + 1]))
        return torch.cat(feats)                                                          # [N, F]

    def record(self, actions: torch.Tensor) -> None:
        for i, a in enumerate(actions):
            self.z[i].append(self._pending[i])
            self.a[i].append(a.clone())


@torch.no_grad()
def play_episode(world, agent, env, window: int, seed: int, deterministic: bool = False,
                 max_steps: int | None = None, keep: bool = False) -> dict:
    """One real episode with the agent acting through the world model -> return (and, with
    keep=True, its observations, actions and frames)."""
    return play_episodes(world, agent, [env], window, [seed], deterministic, max_steps, keep_first=keep)[0]


@torch.no_grad()
def play_episodes(world, agent, envs: list, window: int, seeds: list[int], deterministic: bool = False,
                  max_steps: int | None = None, keep_first: bool = False, stop=None) -> list[dict]:
    """Episode i on envs[i] reset with seeds[i], all stepped in lockstep -> one dict per episode.

    The policy is OnlinePolicy's (z = posterior mode, h from one cached core step per env step,
    `QuatrixWorld.observe_step`), batched: one encode, one cached core step and one policy call per
    step for every episode still running, so n episodes cost about the model time of one. Episodes that
    end drop out of the batch; at `max_steps` every episode still running is cut (its return so far
    counts). keep_first keeps episode 0's observations and frames (for videos). `stop()` is asked
    before each step: True raises KeyboardInterrupt (a stop request during evaluation).
    """
    from torchrl.envs.utils import step_mdp
    n = len(envs)
    if len(seeds) != n:
        raise UsageError(f"play_episodes needs one seed per env, got {len(seeds)} seeds for {n} envs")
    tds = []
    for env, seed in zip(envs, seeds):
        env.set_seed(seed)
        tds.append(env.reset())
    outs = [{"obs": [], "actions": [], "rewards": [], "frames": []} for _ in range(n)]
    dev = world.device
    state = world.acting_state(n, window)
    running, prev = list(range(n)), None            # prev: the running episodes' last actions [m, ...]
    steps = 0
    while running and (max_steps is None or steps < max_steps):
        if stop is not None and stop():
            raise KeyboardInterrupt
        obs = {k: torch.stack([tds[i][k] for i in running]) for k in world.obs_desc}     # [m, ...]
        if keep_first and running[0] == 0:
            first = {k: v[0] for k, v in obs.items()}
            outs[0]["obs"].append(first)
            frame = frame_of(envs[0], first, world.obs_desc)
            if frame is not None:
                outs[0]["frames"].append(frame)
        feat = world.observe_step(state, {k: v.to(dev) for k, v in obs.items()}, prev)  # [m, F]
        a = agent.act(feat, deterministic)                                               # [m] or [m, d]
        a_host = a.cpu()
        still = []
        for j, i in enumerate(running):
            env, td = envs[i], tds[i]
            td["action"] = a_host[j].to(env.action_spec.dtype).reshape(env.action_spec.shape)
            td = env.step(td)
            outs[i]["actions"].append(a_host[j].clone())
            outs[i]["rewards"].append(float(td["next", "reward"]))
            if not bool(td["next", "done"]):
                still.append(j)
            tds[i] = step_mdp(td, exclude_action=True)
        if len(still) < len(running):
            keep = torch.tensor(still, dtype=torch.long, device=dev)
            state = world.select_rows(state, keep)
            a = a[keep]
        running = [running[j] for j in still]
        prev = a
        steps += 1
    for out in outs:
        out["return"] = float(sum(out["rewards"]))
    return outs


def episode_batch(ep: dict, upto: int, world) -> TensorDict:
    """The first `upto` steps of a kept episode as a [1, upto] TensorDict for world.observe."""
    data = {k: torch.stack([o[k] for o in ep["obs"][:upto]])[None] for k in world.obs_desc}
    data["action"] = torch.stack(ep["actions"][:upto])[None]
    is_init = torch.zeros(1, upto, 1, dtype=torch.bool)
    is_init[0, 0] = True
    data["is_init"] = is_init
    return TensorDict(data, batch_size=[1, upto])


def frame_of(env, obs: dict, desc: dict):
    """An RGB frame for videos: the image observation, else env.render(), else None."""
    for k, d in desc.items():
        if d["kind"] == "image":
            return obs[k].cpu().numpy()
    try:
        return render_frame(env)
    except Exception:           # vector-only env without an rgb_array renderer: no video
        return None
