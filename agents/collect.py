"""The env side of training: step the real env(s) with the policy and write each row to the replay.

Alignment of a replay row (docs/DESIGN.md): the observation at t, the action taken at t, and under
"next" the reward, terminated, truncated and done that followed it. `is_init` marks an episode's
first row.

Exact resume: each episode is reset with a seed derived from its index, and the current episode's
actions are kept, so a resumed run replays them (gymnasium envs are deterministic given the seed)
and continues exactly where the straight run would be.
"""
from __future__ import annotations

import time

import torch
from tensordict import TensorDict
from torchrl.envs.utils import step_mdp

from envs import make_env
from envs.families import family_of
from quatrix_world.checkpoint import CheckpointError
from quatrix_world.config import Config
from quatrix_world.encoders import describe_action, describe_obs
from quatrix_world.errors import QuatrixError

from .policy import LanePolicy, OnlinePolicy

ROW_KEYS_NEXT = [("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done")]


class EnvStepError(QuatrixError):
    """The env raised while stepping; the collector is still at the last step boundary."""

    def __init__(self, step: int, error: BaseException):
        text = (str(error).strip().splitlines() or [""])[0][:300]
        super().__init__(f"the env raised {type(error).__name__} at env step {step}" + (f": {text}" if text else ""))


def _guarded(fn, td, step: int):
    """fn(td) (an env step or reset), with anything the env raises as an EnvStepError."""
    try:
        return fn(td)
    except EnvStepError:
        raise
    except Exception as e:
        raise EnvStepError(step, e) from e


def build_env(cfg: Config, seed: int, num_envs: int = 1):
    opts = dict(cfg.env.options)
    family = family_of(cfg.env.id)
    if family is not None and "full_view" in family.options:      # env.full_view: MiniGrid's whole grid
        opts.setdefault("full_view", cfg.env.full_view)
    if cfg.env.drop_keys:
        opts["drop_keys"] = tuple(cfg.env.drop_keys)
    return make_env(cfg.env.id, seed=seed, max_episode_steps=cfg.env.max_episode_steps, num_envs=num_envs,
                    parallel=cfg.trainer.parallel_envs, **opts)


def env_specs(env) -> tuple[dict, dict]:
    """(obs description, action description) of a made env, as plain dicts."""
    kinds = dict(getattr(env, "quatrix_info", {}).get("obs_kinds", {}))
    obs_spec, act_spec = env.observation_spec, env.action_spec
    if env.batch_size:                    # a batched env (num_envs > 1): describe one of its copies
        obs_spec, act_spec = obs_spec[0], act_spec[0]
    keys = [k for k in obs_spec.keys() if isinstance(k, str) and k in kinds] or \
           [k for k in obs_spec.keys() if isinstance(k, str) and k not in ("is_init",)]
    desc = describe_obs({k: obs_spec[k] for k in keys}, kinds)
    rate = getattr(env, "quatrix_info", {}).get("audio_sample_rate")
    for d in desc.values():
        if d["kind"] == "audio" and rate:
            d["sample_rate"] = int(rate)       # the encoder's mel filters follow the env's rate
    return desc, describe_action(act_spec)


class Collector:
    """Steps `env` (one env, or the lanes of a batched env) and fills `replay`.

    Counters: `steps` (env steps taken), `episodes` (episodes started), and for one env the current
    episode's `ep_actions`, `ep_return`, `ep_len`. `seconds` gets "act" and "env" time added.
    `gen` draws the prefill's random actions.
    """

    def __init__(self, env, num_envs: int, world, agent, replay, window: int, seed: int,
                 gen: torch.Generator, seconds: dict):
        self.env, self.num_envs, self.world, self.agent, self.replay = env, num_envs, world, agent, replay
        self.seed, self.gen, self.seconds = seed, gen, seconds
        self.obs_keys = list(world.obs_desc)
        self.act_desc = world.act_desc
        if self.num_envs == 1:
            self.actor = OnlinePolicy(world, agent, window)
        else:                             # one acting context per lane
            self.actor = LanePolicy(world, agent, window, self.num_envs)
            self.lane_return = torch.zeros(self.num_envs)
            self.lane_len = torch.zeros(self.num_envs, dtype=torch.long)
        self.steps, self.episodes = 0, 0
        self.ep_actions: list = []
        self.ep_return, self.ep_len = 0.0, 0

    def start(self, replay_actions=None) -> None:
        """Fresh episode(s): the single env (replaying `replay_actions` on resume) or every lane."""
        self.td = self._start_episode(replay_actions) if self.num_envs == 1 else self._start_lanes()

    def step(self, random: bool = False) -> list:
        """One env step (one in each lane), random actions or the policy's -> [(return, length)]
        of the episodes it finished."""
        return self._step_one(random) if self.num_envs == 1 else self._step_lanes(random)

    def episode_seed(self, index: int) -> int:
        return self.seed * 1_000_003 + index

    def random_action(self) -> torch.Tensor:
        a = self.act_desc
        if a["kind"] == "discrete":
            return torch.randint(a["n"], (), generator=self.gen)
        low, high = torch.tensor(a["low"]), torch.tensor(a["high"])
        return low + (high - low) * torch.rand(a["dim"], generator=self.gen)

    # ------------------------------------------------------------------ one env

    def _step_one(self, random: bool) -> list:
        obs = {k: self.td[k] for k in self.obs_keys}
        t0 = time.perf_counter()
        if random:
            action = self.random_action()
            self.actor.features(obs)          # keep the acting context in step
        else:
            action = self.actor.act(obs)
        t1 = time.perf_counter()
        self.td, done = self._env_step(self.td, action)
        self.seconds["act"] += t1 - t0
        self.seconds["env"] += time.perf_counter() - t1
        self.steps += 1
        if not done:
            return []
        finished = [(self.ep_return, self.ep_len)]
        self.td = self._start_episode()
        return finished

    def _start_episode(self, replay_actions=None) -> TensorDict:
        """Reset with a seed derived from the episode index; optionally replay actions (resume)."""
        if replay_actions is None:
            self.episodes += 1
            self.ep_actions = []
        self.env.set_seed(self.episode_seed(self.episodes))
        td = self.env.reset()
        self.actor.reset()
        self.ep_return, self.ep_len = 0.0, 0
        for a in list(replay_actions or []):
            self.actor.features({k: td[k] for k in self.obs_keys})
            td, done = self._env_step(td, a, store=False)
            if done:
                raise CheckpointError("replaying the interrupted episode ended it early — the env is not "
                                      "deterministic given its seed, so the run cannot resume exactly — resume with --fresh-episode")
        return td

    def _env_step(self, td: TensorDict, action: torch.Tensor, store: bool = True):
        td["action"] = action.to(self.env.action_spec.dtype).reshape(self.env.action_spec.shape)
        td = _guarded(self.env.step, td, self.steps)
        self.actor.record(action)
        if store:
            self.replay.extend(td.select(*self.obs_keys, "action", "is_init", *ROW_KEYS_NEXT))
            self.ep_actions.append(action.clone())
        self.ep_return += float(td["next", "reward"])
        self.ep_len += 1
        done = bool(td["next", "done"])
        return step_mdp(td, exclude_action=True), done

    # ------------------------------------------------------------------ lanes of a batched env

    def _start_lanes(self) -> TensorDict:
        """Fresh episodes in every lane. A resumed run starts new episodes here: exact resume of the
        interrupted episodes is for one env (their rows already in the replay are kept)."""
        self.env.set_seed(self.episode_seed(self.episodes))
        self.episodes += self.num_envs
        for i in range(self.num_envs):
            self.actor.reset_lane(i)
        self.lane_return.zero_()
        self.lane_len.zero_()
        return self.env.reset()

    def _step_lanes(self, random: bool) -> list:
        """One step in each lane (lanes reset on their own when done)."""
        N = self.num_envs
        feats = self.actor.features({k: self.td[k] for k in self.obs_keys})             # [N, F]
        if random:
            action = torch.stack([self.random_action() for _ in range(N)])
        else:
            with torch.no_grad():
                action = self.agent.act(feats, False).cpu()
        self.td["action"] = action.to(self.env.action_spec.dtype).reshape(self.env.action_spec.shape)
        td, self.td = _guarded(self.env.step_and_maybe_reset, self.td, self.steps)
        self.actor.record(action)
        self.replay.extend(td.select(*self.obs_keys, "action", "is_init", *ROW_KEYS_NEXT))
        self.lane_return += td["next", "reward"].reshape(N)
        self.lane_len += 1
        self.steps += N
        finished = []
        for i in td["next", "done"].reshape(N).nonzero().flatten().tolist():
            finished.append((float(self.lane_return[i]), int(self.lane_len[i])))
            self.lane_return[i], self.lane_len[i] = 0.0, 0
            self.actor.reset_lane(i)
            self.episodes += 1
        return finished
