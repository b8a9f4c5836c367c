"""World model: alignment, masking, cache equivalence, branching, bad input, learning."""
import math

import pytest
import torch
from tensordict import TensorDict

from quatrix_world.config import EncoderConfig, WorldConfig
from quatrix_world.encoders import SpecError
from quatrix_world.world import QuatrixWorld

B, T, D, N_ACT = 3, 7, 5, 4          # distinct sizes so broadcasting bugs show
OBS = {"observation": {"kind": "vector", "shape": [D], "dtype": "float32", "vocab": None}}
ACT = {"kind": "discrete", "n": N_ACT}


def small_world(**kw):
    cfg = WorldConfig(latent_groups=4, latent_classes=6, hidden_size=24, num_layers=2, q_rank=8, num_heads=2,
                      max_seq_len=48, encoder=EncoderConfig(hidden_size=20, q_rank=4, num_heads=2), **kw)
    torch.manual_seed(0)
    return QuatrixWorld(cfg, OBS, ACT)


def episode_batch(b=B, t=T):
    """Row t: obs value t, action t % N_ACT, reward 10 + t after acting, terminated only at the last row."""
    steps = torch.arange(t, dtype=torch.float32)
    obs = steps[None, :, None].expand(b, t, D).clone()
    return TensorDict({
        "observation": obs,
        "action": (torch.arange(t) % N_ACT)[None].expand(b, t).clone(),
        "is_init": torch.zeros(b, t, 1, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
        "next": {"reward": (10 + steps)[None, :, None].expand(b, t, 1).clone(),
                 "terminated": (steps == t - 1)[None, :, None].expand(b, t, 1).clone(),
                 "truncated": torch.zeros(b, t, 1, dtype=torch.bool)},
    }, batch_size=[b, t])


def test_unpack_alignment():
    w = small_world()
    d = w.unpack(episode_batch())
    assert d["obs"]["observation"].shape == (B, T, D)
    # reward_t is next.reward of row t: the reward *after* acting at t
    assert torch.equal(d["reward"][0], 10 + torch.arange(T, dtype=torch.float32))
    assert torch.equal(d["action"][0], torch.arange(T) % N_ACT)
    # the continue target comes from terminated only (truncated is ignored)
    assert d["terminated"][0].tolist() == [False] * (T - 1) + [True]


def test_truncation_is_not_termination():
    """A time limit (truncated, not terminated) keeps the continue target at 1: the loss of a batch
    truncated at step 2 equals the loss of the same batch without the flag."""
    w = small_world()
    plain = episode_batch()
    cut = episode_batch()
    cut["next", "truncated"][:, 2] = True
    cut["next", "done"] = cut["next", "truncated"] | cut["next", "terminated"]
    d = w.unpack(cut)
    assert d["terminated"][0].tolist() == [False] * (T - 1) + [True]      # row 2 still continues
    torch.manual_seed(3)
    loss_cut, m_cut, _ = w.loss(cut)
    torch.manual_seed(3)
    loss_plain, m_plain, _ = w.loss(plain)
    assert torch.equal(loss_cut, loss_plain) and torch.equal(m_cut["loss/continue"], m_plain["loss/continue"])


def test_token_t_predicts_step_t():
    """h_t (which predicts z_{t+1}, reward_t, cont_t) sees action a_t but nothing after t."""
    w = small_world()
    z = torch.randn(B, T, w.z_dim)
    a = torch.randint(N_ACT, (B, T))
    is_init = torch.zeros(B, T, dtype=torch.bool)
    h = w.run_core(z, a, is_init)
    t = 3
    a2 = a.clone()
    a2[:, t] = (a2[:, t] + 1) % N_ACT
    h2 = w.run_core(z, a2, is_init)
    assert torch.allclose(h[:, :t], h2[:, :t])                # the past cannot see a_t
    assert not torch.allclose(h[:, t], h2[:, t])              # token t carries a_t
    z2 = z.clone()
    z2[:, t + 1] += 1
    h3 = w.run_core(z2, a, is_init)
    assert torch.allclose(h[:, : t + 1], h3[:, : t + 1])      # no peeking at z_{t+1}


def test_core_never_reads_across_episode_start():
    w = small_world()
    z = torch.randn(B, T, w.z_dim)
    a = torch.randint(N_ACT, (B, T))
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[:, 4] = True
    h = w.run_core(z, a, is_init)
    z2 = z.clone()
    z2[:, :4] = torch.randn(B, 4, w.z_dim)
    h2 = w.run_core(z2, a, is_init)
    assert torch.allclose(h[:, 4:], h2[:, 4:], atol=1e-6)
    assert not torch.allclose(h[:, :4], h2[:, :4])


def test_dynamics_loss_masks_pairs_across_episode_start():
    """KL terms pair post_{t+1} with prior_t; a pair whose target is an episode start is masked."""
    w = small_world()
    batch = episode_batch()
    batch["is_init"][:, 1:] = True            # every row starts an episode: no valid pair at all
    torch.manual_seed(1)
    _, m, _ = w.loss(batch)
    assert float(m["loss/dyn"]) == 0.0 and float(m["world/kl"]) == 0.0
    batch["is_init"][:, 1:] = False
    _, m, _ = w.loss(batch)
    assert float(m["loss/dyn"]) >= w.cfg.free_bits


def test_loss_terms_named_and_finite():
    w = small_world()
    total, m, aux = w.loss(episode_batch())
    for k in ("loss/recon_observation", "loss/reward", "loss/continue", "loss/dyn", "loss/rep",
              "world/kl", "world/post_entropy", "world/reward_acc"):
        assert k in m and torch.isfinite(m[k])
    total.backward()
    assert aux["z"].shape == (B, T, w.z_dim)


def uniform_policy(feat):
    return torch.distributions.Categorical(logits=torch.zeros(feat.shape[0], N_ACT))


def test_imagination_cache_equals_full_recompute():
    w = small_world()
    batch = episode_batch()
    batch["is_init"][:, 3] = True              # the context spans an episode start
    torch.manual_seed(3)
    state = w.observe(batch)
    torch.manual_seed(4)
    fast = w.imagine(state, uniform_policy, horizon=9, use_cache=True)
    torch.manual_seed(4)
    slow = w.imagine(state, uniform_policy, horizon=9, use_cache=False)
    assert fast.batch_size == torch.Size([B, 9])
    for k in ("feat", "next_feat", "reward", "cont"):
        assert torch.allclose(fast[k], slow[k], atol=1e-5), k
    assert torch.equal(fast["action"], slow["action"])


def test_imagined_next_feat_is_the_next_rows_feat():
    """The actor-critic evaluates its critic once over feat[:, :] and next_feat[:, -1] on this."""
    w = small_world()
    traj = w.imagine(w.observe(episode_batch()), uniform_policy, horizon=7)
    assert torch.equal(traj["next_feat"][:, :-1], traj["feat"][:, 1:])


def test_imagination_is_one_token_per_step():
    w = small_world()
    state = w.observe(episode_batch())
    before = len(state["caches"][0])
    w.imagine(state, uniform_policy, horizon=5)
    assert len(state["caches"][0]) == before                  # the caller's cache is not consumed
    s = dict(state, caches=state["caches"].clone())
    nxt = w.step(s, torch.zeros(B, dtype=torch.long))
    assert len(nxt["caches"][0]) == before + 1


def test_group_branching_gives_different_rollouts():
    w = small_world()
    state = w.observe(episode_batch(b=2))
    torch.manual_seed(0)
    traj = w.imagine(state, uniform_policy, horizon=6, group_size=5)
    assert traj.batch_size == torch.Size([10, 6])
    feat = traj["feat"].reshape(2, 5, 6, -1)
    assert torch.allclose(feat[:, :, 0], feat[:, :1, 0].expand_as(feat[:, :, 0]))   # same start
    later = feat[0, :, -1]
    assert len({tuple(x.tolist()) for x in later.round(decimals=4)}) > 1           # different futures


def test_bad_inputs():
    w = small_world()
    batch = episode_batch()
    with pytest.raises(SpecError, match="is_init"):
        w.loss(batch.exclude("is_init"))
    with pytest.raises(SpecError, match="terminated"):
        w.loss(batch.exclude(("next", "terminated")))
    bad = batch.clone()
    bad["observation"] = torch.zeros(B, T, D + 1)
    with pytest.raises(SpecError, match="shape"):
        w.loss(bad)
    state = w.observe(batch)
    with pytest.raises(ValueError, match="horizon"):
        w.imagine(state, uniform_policy, horizon=0)
    with pytest.raises(ValueError, match="group_size"):
        w.imagine(state, uniform_policy, horizon=2, group_size=0)


def test_overfit_corridor_predicts_reward_at_right_step():
    """Deterministic 1-D corridor: from the start, action 'right' 4 times reaches the goal (reward 1
    after the 4th step, terminated). After overfitting, imagination with the 'right' policy predicts
    the reward at step index 3 and not before."""
    torch.manual_seed(0)
    L = 5
    t = torch.arange(L)
    obs = torch.nn.functional.one_hot(t.clamp(max=4), 5).float()[None].repeat(8, 1, 1)
    world = QuatrixWorld(WorldConfig(latent_groups=4, latent_classes=5, hidden_size=32, num_layers=1, q_rank=8,
                                     num_heads=2, max_seq_len=32, free_bits=0.1,
                                     encoder=EncoderConfig(hidden_size=32, q_rank=4, num_heads=2)),
                         {"observation": {"kind": "vector", "shape": [5], "dtype": "float32", "vocab": None}},
                         {"kind": "discrete", "n": 2})
    reward = (t == 3).float()
    batch = TensorDict({
        "observation": obs[:, :4], "action": torch.ones(8, 4, dtype=torch.long),
        "is_init": (t[:4] == 0)[None, :, None].expand(8, 4, 1).clone(),
        "next": {"reward": reward[None, :4, None].expand(8, 4, 1).clone(),
                 "terminated": (t[:4] == 3)[None, :, None].expand(8, 4, 1).clone()}}, batch_size=[8, 4])
    opt = torch.optim.Adam(world.parameters(), lr=3e-3)
    for _ in range(300):
        loss, m, _ = world.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    right = lambda f: torch.distributions.Categorical(probs=torch.tensor([[0.0, 1.0]]).expand(f.shape[0], 2))
    state = world.observe(batch[:, :1])
    traj = world.imagine(state, right, horizon=4)
    r = traj["reward"].mean(0)
    assert r[3] > 0.8, r
    assert r[:3].abs().max() < 0.2, r
    assert traj["cont"].mean(0)[3] < 0.2


def test_imagined_env_rollout_the_torchrl_way():
    from tensordict.nn import TensorDictModule
    from quatrix_world.imagine import ImaginedEnv
    w = small_world()
    state = w.observe(episode_batch())
    torch.nn.init.constant_(w.cont_net[-1].bias, 10.0)                    # p(continue) ~ 1: no termination
    env = ImaginedEnv(w, state, sample_termination=False)
    head = torch.nn.Linear(w.feat_dim, N_ACT)
    policy = TensorDictModule(lambda f: head(f).argmax(-1), in_keys=["feat"], out_keys=["action"])
    td = env.rollout(5, policy)
    assert td.batch_size == torch.Size([B, 5])
    assert td["next", "feat"].shape == (B, 5, w.feat_dim)
    assert td["next", "reward"].shape == (B, 5, 1)
    assert torch.equal(td["feat"][:, 1:], td["next", "feat"][:, :-1])      # steps chain
    assert len(state["caches"][0]) == T - 1                                # the start state is reused, not consumed


def test_world_model_loss_falls_on_real_minigrid_steps():
    """A few hundred random MiniGrid steps (pixels + mission), 40 updates: the loss falls."""
    from envs import EpisodeReplay, make_env
    from torchrl.envs.utils import step_mdp
    from quatrix_world.config import load_config
    from agents.collect import env_specs
    torch.manual_seed(0)
    env = make_env("MiniGrid-Empty-6x6-v0", seed=0)
    obs, act = env_specs(env)
    cfg = load_config(["default.yaml", "debug.yaml"]).world
    world = QuatrixWorld(cfg, obs, act)
    replay = EpisodeReplay(1000, 16, 8, seed=0)
    td = env.reset()
    for _ in range(300):
        td["action"] = torch.randint(7, ())
        td = env.step(td)
        replay.extend(td.select(*obs, "action", "is_init", ("next", "reward"), ("next", "terminated"),
                                ("next", "truncated"), ("next", "done")))
        td = step_mdp(td, exclude_action=True)
        if td.get("done", torch.zeros(1, dtype=torch.bool)).any():
            td = env.reset()
    opt = torch.optim.Adam(world.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss, m, _ = world.loss(replay.sample())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_sample_index_draws_each_class_at_its_probability():
    from quatrix_world.latents import sample_index
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    idx = sample_index(probs.repeat(20000, 1), generator=g).reshape(20000, 3)      # [N, rows]
    freq = torch.stack([torch.bincount(idx[:, r], minlength=4) for r in range(3)]).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    assert (idx[:, 1] == 1).all() and not ((idx[:, 2] == 1) | (idx[:, 2] == 2)).any()   # zero-prob never drawn


def test_token_encoder_dedupe_matches_encoding_every_row():
    from quatrix_world.config import EncoderConfig
    from quatrix_world.encoders import TokenEncoder
    torch.manual_seed(0)
    enc = TokenEncoder([5], 11, EncoderConfig(hidden_size=16, q_rank=4))
    ids = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [1, 2, 3, 0, 0], [1, 2, 3, 0, 0]])
    fast = enc(ids)                                            # 2 distinct rows encoded
    ref = enc.encode_rows(ids)                                 # every row encoded
    assert torch.allclose(fast, ref, atol=1e-6)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), list(enc.parameters()), allow_unused=True)
    g_ref = torch.autograd.grad(ref.pow(2).sum(), list(enc.parameters()), allow_unused=True)
    for a, b in zip(g_fast, g_ref):
        if a is not None:              # fp32 sums in another order: errors scale with the gradient's size
            assert torch.allclose(a, b, atol=1e-6 * (1.0 + float(b.abs().max())))


def test_image_encoder_dedupe_matches_encoding_every_frame():
    from quatrix_world.config import EncoderConfig
    from quatrix_world.encoders import ImageEncoder, distinct_rows
    torch.manual_seed(0)
    enc = ImageEncoder([16, 8, 3], EncoderConfig(hidden_size=16, q_rank=4, patch_size=4))
    frames = torch.randint(0, 256, (3, 16, 8, 3), dtype=torch.uint8)
    x = frames[torch.tensor([0, 1, 0, 2, 1, 0, 0])]                 # 7 frames, 3 distinct
    uniq, inverse = distinct_rows(x)
    assert uniq.shape == (3, 16, 8, 3) and torch.equal(uniq[inverse], x)
    x[6, 5, 3, 1] ^= 1                                              # one bit differs: its own row
    assert distinct_rows(x)[0].shape[0] == 4
    assert distinct_rows(frames) is None                            # nothing to share: plain path
    fast, ref = enc(x), enc.encode_frames(x)
    assert torch.allclose(fast, ref, atol=1e-6)
    g_fast = torch.autograd.grad((fast * torch.arange(7.0)[:, None]).sum(), list(enc.parameters()))
    g_ref = torch.autograd.grad((ref * torch.arange(7.0)[:, None]).sum(), list(enc.parameters()))
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-5 * (1.0 + float(b.abs().max())))


def test_image_decoder_patch_layout_loss_matches_the_image_loss():
    from quatrix_world.config import EncoderConfig
    from quatrix_world.encoders import ImageDecoder
    torch.manual_seed(0)
    dec = ImageDecoder(12, [16, 24, 3], EncoderConfig(hidden_size=8, patch_size=8))
    z = torch.randn(5, 12, requires_grad=True)
    target = torch.randint(0, 256, (5, 16, 24, 3), dtype=torch.uint8)
    image = (dec(z) - (target.float() / 255.0 - 0.5)).pow(2).flatten(1).sum(-1)    # pasted into an image
    fast, ref = dec.loss(z, target), dec.reference_loss(z, target)
    assert fast.shape == (5,)
    assert torch.allclose(ref, image, rtol=1e-5) and torch.allclose(fast, ref, rtol=1e-5)
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0])                   # a different weight per image
    params = [z, *dec.parameters()]
    g_fast = torch.autograd.grad((fast * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-5 * (1.0 + float(b.abs().max())))



def test_binary_image_loss_is_class_balanced_cross_entropy():
    from quatrix_world.config import EncoderConfig
    from quatrix_world.encoders import ImageDecoder
    torch.manual_seed(0)
    dec = ImageDecoder(12, [10, 10, 4], EncoderConfig(hidden_size=8, patch_size=2, image_loss="binary"))
    z = torch.randn(5, 12)
    target = torch.zeros(5, 10, 10, 4, dtype=torch.uint8)
    target[:, :3, :, 3] = 255                                      # channel 3: 30% lit (bricks)
    for n in range(5):
        target[n, 9, 2 * n, 0] = 255                               # channel 0: one pixel per frame (a paddle)
    logits = dec(z)                                                # [5, 10, 10, 4], pasted into an image
    t = target.float() / 255.0
    lit = t.mean((0, 1, 2))                                        # [0.01, 0, 0, 0.3]
    w = ((1 - lit) / lit.clamp(min=0.01)).clamp(1, 100)            # [99, 99, 99, 2.33]
    p = torch.sigmoid(logits)
    by_hand = -(w * t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(-1)
    assert torch.allclose(dec.loss(z, target), by_hand, rtol=1e-4)
    assert torch.equal(dec.to_obs(logits), (logits > 0).to(torch.uint8) * 255)
    # a one-pixel object weighs as much as its channel's dark pixels: missing it costs ~4.6 x 99 nats
    # under a guess of its base rate, where squared error charges at most 1
    miss = torch.zeros(1, 10, 10, 4)
    miss[0, 9, 0, 0] = 1.0
    guess = torch.full((1, 10, 10, 4), math.log(0.01 / 0.99))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(guess, miss, pos_weight=w, reduction="none")
    dark = bce[..., 0].sum() - bce[0, 9, 0, 0]                      # the channel's 99 dark pixels, ~1 nat
    assert bce[0, 9, 0, 0] > 400 and dark < 2


def test_image_loss_is_a_checked_choice():
    from quatrix_world.config import ConfigError, load_config
    assert load_config(["default.yaml", "minatar.yaml"], []).world.encoder.image_loss == "binary"
    assert load_config(["default.yaml"], []).world.encoder.image_loss == "mse"
    with pytest.raises(ConfigError, match="world.encoder.image_loss must be one of mse, binary"):
        load_config(["default.yaml"], ["world.encoder.image_loss=bce"])

def test_features_split_into_named_parts():
    w = small_world()
    traj = w.imagine(w.observe(episode_batch()), uniform_policy, horizon=4)
    f = w.split_features(traj["feat"])                              # [B, 4, F] -> z, h
    assert f.z.shape == (B, 4, w.z_dim) and f.h.shape == (B, 4, w.h_dim)
    assert torch.equal(w.features(f.z, f.h), traj["feat"])
    assert torch.allclose(f.z.sum(-1), torch.full((B, 4), float(w.cfg.latent_groups)))   # one-hot per group


def test_imagined_env_seeds_its_own_stream():
    """set_seed makes imagined rollouts repeat and leaves the global RNG alone."""
    from tensordict.nn import TensorDictModule
    from quatrix_world.imagine import ImaginedEnv
    w = small_world()
    state = w.observe(episode_batch())
    torch.nn.init.constant_(w.cont_net[-1].bias, 10.0)                    # no termination
    head = torch.nn.Linear(w.feat_dim, N_ACT)
    policy = TensorDictModule(lambda f: head(f).argmax(-1), in_keys=["feat"], out_keys=["action"])
    runs = []
    for _ in range(2):
        env = ImaginedEnv(w, state, sample_termination=False)
        env.set_seed(11)
        before = torch.get_rng_state()
        runs.append(env.rollout(4, policy)["next", "feat"])
        assert torch.equal(torch.get_rng_state(), before)                    # the global stream untouched
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("kind", ["actor_critic", "grpo"])
def test_rollout_value_is_the_slow_critics_value_of_each_imagined_state(kind):
    # the critic's slow-copy target comes from the rollout; it must be v_slow(feat) step for step
    from agents import build_agent
    from quatrix_world.config import AgentConfig
    w = small_world()
    agent = build_agent(AgentConfig(kind=kind, hidden_size=16, horizon=4, group_size=3), w.feat_dim, ACT)
    for p in agent.slow_critic.parameters():                  # a non-trivial slow critic
        torch.nn.init.normal_(p, std=0.5)
    b = agent.rollout(w, w.observe(episode_batch()))
    assert b["value"].shape == b["feat"].shape[:2] == (B * (3 if kind == "grpo" else 1), 4)
    assert torch.allclose(b["value"], agent.slow_critic.value(b["feat"]), atol=1e-5)
    losses, _ = agent.losses(b, 0)
    ref = agent.critic_loss(b["feat"], b["returns"], b["weight"])      # slow value recomputed
    assert torch.allclose(losses["loss_critic"], ref, rtol=1e-5)


@pytest.mark.parametrize("norm", ["group_std", "return_scale"])
def test_grpo_critic_mix_adds_each_steps_critic_advantage(norm):
    # agent.grpo_critic_mix = m: advantage = (1 - m) x the rollout's group advantage + m x (R_t - v_t) / scale
    from agents import build_agent
    from quatrix_world.config import AgentConfig
    w = small_world()
    out = {}
    for mix in (0.0, 0.25, 1.0):
        agent = build_agent(AgentConfig(kind="grpo", hidden_size=16, horizon=4, group_size=3, grpo_advantage=norm,
                                        grpo_critic_mix=mix), w.feat_dim, ACT)
        torch.manual_seed(0)
        for p in list(agent.slow_critic.parameters()) + list(agent.actor.parameters()):
            torch.nn.init.normal_(p, std=0.5)
        agent.retnorm.scale = torch.tensor(4.0)                    # an EMA already above its floor of 1
        torch.manual_seed(1)
        out[mix] = agent.rollout(w, w.observe(episode_batch()))
    group, critic = out[0.0], out[1.0]
    assert torch.equal(group["returns"], critic["returns"]) and torch.equal(group["value"], critic["value"])
    step = critic["adv"]
    assert not torch.allclose(step[:, 0:1].expand_as(step), step)                  # it varies along the rollout
    seen = (group["score"] if norm == "return_scale" else group["returns"]).flatten()   # what the scale observed
    expected_scale = 0.99 * 4.0 + 0.01 * (torch.quantile(seen, 0.95) - torch.quantile(seen, 0.05))
    assert torch.allclose(step, (critic["returns"] - critic["value"]) / expected_scale, atol=1e-6)
    assert torch.allclose(out[0.25]["adv"], 0.75 * group["adv"] + 0.25 * step, atol=1e-6)


def test_imagined_z_index_is_the_class_of_each_imagined_latent():
    w = small_world()
    traj = w.imagine(w.observe(episode_batch()), uniform_policy, horizon=5, group_size=2)
    G = w.cfg.latent_groups
    for key, feat_key in (("z_index", "feat"), ("next_z_index", "next_feat")):
        z = w.split_features(traj[feat_key]).z.reshape(B * 2, 5, G, -1)          # [N, H, G, C]
        assert traj[key].shape == (B * 2, 5, G)
        assert torch.equal(z.argmax(-1), traj[key]) and torch.equal(z.sum(-1), torch.ones(B * 2, 5, G))


@pytest.mark.parametrize("kind", ["actor_critic", "grpo"])
def test_agent_reading_z_by_index_equals_the_dense_agent(kind):
    # the same weights (the two share a state dict): the same rollout from the same seed, the
    # same losses and the same gradients
    from agents import build_agent
    from quatrix_world.config import AgentConfig
    w = small_world()
    cfg = AgentConfig(kind=kind, hidden_size=16, horizon=4, group_size=3)
    dense = build_agent(cfg, w.feat_dim, ACT)
    fast = build_agent(cfg, w.feat_dim, ACT, latent=w.latent_shape)
    for p in dense.parameters():                          # non-trivial weights everywhere
        torch.nn.init.normal_(p, std=0.3)
    dense.slow_critic.load_state_dict(dense.critic.state_dict())
    fast.load_state_dict(dense.state_dict())
    assert fast.actor.reads_latent_index and not dense.actor.reads_latent_index
    start = w.observe(episode_batch())
    out = []
    for agent in (dense, fast):
        torch.manual_seed(3)
        b = agent.rollout(w, start)
        losses, _ = agent.losses(b, 0)
        grads = []
        for name, term in losses.items():
            module = agent.optimizers[name.removeprefix("loss_")][1]
            module.zero_grad()
            term.backward()
            grads.append(torch.cat([p.grad.flatten() for p in module.net[1:].parameters()]))
            grads.append(module.net[0].weight.grad)
        out.append((b, losses, grads))
    (bd, ld, gd), (bf, lf, gf) = out
    assert torch.equal(bd["action"], bf["action"])                        # the same imagined rollout
    assert torch.allclose(bd["returns"], bf["returns"], atol=1e-5)
    for k in ld:
        assert torch.allclose(ld[k], lf[k], rtol=1e-5, atol=1e-6), k
    for a, b in zip(gd, gf):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert gd[0].abs().sum() > 0


def test_imagined_heads_and_weights_match_each_step():
    # imagine runs the reward/continue heads once over all steps; they must be the heads of each
    # step's h, and weight_t the probability that no termination came before step t
    w = small_world()
    torch.nn.init.normal_(w.reward_net[-1].weight, std=0.3)      # non-zero reward head
    traj = w.imagine(w.observe(episode_batch()), uniform_policy, horizon=5)
    h = w.split_features(traj["next_feat"]).h                      # [B, 5, H]: h after acting at t
    for t in range(5):
        step = w.heads(h[:, t])
        assert torch.allclose(traj["reward"][:, t], step["reward"], atol=1e-5)
        assert torch.allclose(traj["cont"][:, t], step["cont"], atol=1e-6)
    assert torch.equal(traj["weight"][:, 0], torch.ones(B))
    assert torch.allclose(traj["weight"][:, 1:], traj["weight"][:, :-1] * traj["cont"][:, :-1], atol=1e-6)
    assert (traj["cont"] < 1).all() and (traj["weight"][:, -1] < 1).all()   # the check has teeth


def test_onehot_sample_draws_from_the_probabilities():
    from quatrix_world.latents import onehot_sample, sample_onehot, unimix_logits, unimix_probs
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [-3.0, 4.0, 0.0, 1.0]])
    probs = unimix_probs(logits, 0.01)
    assert torch.allclose(probs.log(), unimix_logits(logits, 0.01)) and torch.allclose(probs.sum(-1), torch.ones(3))
    draws = onehot_sample(probs.expand(20000, 3, 4), generator=g)                 # [N, rows, C]
    assert ((draws == 0) | (draws == 1)).all() and torch.equal(draws.sum(-1), torch.ones(20000, 3))
    assert torch.allclose(draws.mean(0), probs, atol=0.015)
    # the straight-through sample draws the same one-hots from the same uniforms
    a = onehot_sample(probs, generator=torch.Generator().manual_seed(5))
    b = sample_onehot(probs.log(), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
