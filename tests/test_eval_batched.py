"""Evaluation plays its episodes together: it must act exactly as the one-episode policy does."""
import torch
from torchrl.envs.utils import step_mdp

from agents import build_agent
from agents.collect import build_env, env_specs
from agents.policy import OnlinePolicy, play_episodes
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


def test_observe_step_matches_recomputing_the_window():
    """The cached acting step (fast path) against a full core pass over the same context tokens
    (reference), at every step of an episode longer than the window, so the cache restart runs."""
    from agents.policy import window_features
    cfg, world, agent = _model("MiniGrid-Empty-6x6-v0")
    N, window, steps = 3, 6, 17
    torch.manual_seed(0)
    state = world.acting_state(N, window)
    prev, sizes = None, []
    for t in range(steps):
        obs = {"image": torch.randint(0, 256, (N, 56, 56, 3), dtype=torch.uint8),
               "mission": torch.randint(1, 20, (N, world.obs_desc["mission"]["shape"][0]))}
        fast = world.observe_step(state, obs, prev)                                   # [N, F]
        z = world.encode_mode(obs)
        if state["tokens"]:
            zs = torch.stack([tok[0] for tok in state["tokens"]], 1)                  # [N, T, Z]
            acts = torch.stack([tok[1] for tok in state["tokens"]], 1)                # [N, T]
            ref = window_features(world, z, zs, acts)
        else:
            ref = window_features(world, z)
        assert fast.shape == (N, world.feat_dim)
        assert torch.allclose(fast, ref, atol=1e-5), t
        sizes.append(len(state["tokens"]))
        prev = torch.randint(0, 7, (N,))
    assert sizes[:window + 1] == list(range(window + 1))                       # one token per step
    assert max(sizes) == window and min(sizes[window + 1:]) == window // 2       # filled, then restarted
    # rows drop out: the selected state continues exactly as the full one would for those rows
    keep = torch.tensor([0, 2])
    sub = world.select_rows(state, keep)
    obs = {"image": torch.randint(0, 256, (N, 56, 56, 3), dtype=torch.uint8),
           "mission": torch.randint(1, 20, (N, world.obs_desc["mission"]["shape"][0]))}
    full = world.observe_step(state, obs, prev)
    part = world.observe_step(sub, {k: v[keep] for k, v in obs.items()}, prev[keep])
    assert torch.allclose(full[keep], part, atol=1e-5)
