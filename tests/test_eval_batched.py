"""Evaluation plays its episodes together: it must act exactly as the one-episode policy does."""
import torch
from torchrl.envs.utils import step_mdp

from agents.common import build_agent
from agents.trainer import OnlinePolicy, build_env, env_specs, play_episodes
from quatrix_world.config import load_config
from quatrix_world.world import QuatrixWorld


def _model(env_id: str):
    cfg = load_config(["default.yaml", "debug.yaml"], [f"env.id={env_id}"])
    env = build_env(cfg, 0)
    obs_desc, act_desc = env_specs(env)
    torch.manual_seed(3)
    world = QuatrixWorld(cfg.world, obs_desc, act_desc).eval()
    agent = build_agent(cfg.agent, world.feat_dim, world.act_desc)
    torch.nn.init.normal_(agent.actor.net[-1].weight, std=0.5)      # a non-uniform policy
    return cfg, world, agent


def _one_by_one(world, agent, env, window, seed):
    """The training-time acting path (OnlinePolicy), one step at a time."""
    actor = OnlinePolicy(world, agent, window)
    env.set_seed(seed)
    td, actions, rewards, done = env.reset(), [], [], False
    while not done:
        a = actor.act({k: td[k] for k in world.obs_desc}, deterministic=True)
        td["action"] = a.to(env.action_spec.dtype).reshape(env.action_spec.shape)
        td = env.step(td)
        actor.record(a)
        actions.append(int(a))
        rewards.append(float(td["next", "reward"]))
        done = bool(td["next", "done"])
        td = step_mdp(td, exclude_action=True)
    return actions, rewards


def test_lockstep_episodes_match_the_online_policy():
    cfg, world, agent = _model("CartPole-v1")
    window, seeds = 5, [11, 12, 13, 14]            # window < episode length: the sliding window matters
    envs = [build_env(cfg, 100 + i) for i in range(len(seeds))]
    together = play_episodes(world, agent, envs, window, seeds, deterministic=True, keep_first=True)
    lengths = set()
    for ep, seed in zip(together, seeds):
        actions, rewards = _one_by_one(world, agent, build_env(cfg, 0), window, seed)
        assert [int(a) for a in ep["actions"]] == actions
        assert ep["rewards"] == rewards and ep["return"] == sum(rewards)
        lengths.add(len(actions))
    assert len(lengths) > 1                          # episodes ended at different steps (drop-out path ran)
    assert len(together[0]["obs"]) == len(together[0]["actions"]) and not together[1]["obs"]


def test_max_steps_and_sampled_actions():
    cfg, world, agent = _model("MiniGrid-Empty-6x6-v0")
    envs = [build_env(cfg, 0), build_env(cfg, 1)]
    eps = play_episodes(world, agent, envs, 7, [1, 2], deterministic=False, max_steps=9, keep_first=True)
    assert [len(e["actions"]) for e in eps] == [9, 9]
    assert len(eps[0]["frames"]) == 9 and eps[0]["frames"][0].shape == (56, 56, 3)
