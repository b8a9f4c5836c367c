"""The RL math and the agent interface: λ-returns, two-hot, return normalisation, GRPO advantages,
the actor, the losses the loop steps, and the NaN guard that runs before any weight moves."""
import math

import pytest
import torch

from agents import GRPO, ActorCritic, build_agent
from agents.common import Actor, EntropyScale, ReturnNorm, lambda_returns, replay_lambda_returns
from quatrix_world.config import AgentConfig, load_config
from quatrix_world.latents import TwoHot, symexp, symlog

N, H, F = 3, 5, 7          # distinct sizes: rows, horizon, feature dim


def test_lambda_returns_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    c = torch.tensor([[1.0, 0.5, 1.0]])
    v = torch.tensor([[10.0, 20.0, 30.0]])                  # v(s_{t+1})
    g, lam = 0.9, 0.8
    R2 = 3 + g * 1.0 * ((1 - lam) * 30 + lam * 30)
    R1 = 2 + g * 0.5 * ((1 - lam) * 20 + lam * R2)
    R0 = 1 + g * 1.0 * ((1 - lam) * 10 + lam * R1)
    assert torch.allclose(lambda_returns(r, c, v, g, lam), torch.tensor([[R0, R1, R2]]))


def test_lambda_returns_limits():
    torch.manual_seed(0)
    r, v = torch.randn(N, H), torch.randn(N, H)
    c = (torch.rand(N, H) > 0.2).float()
    g = 0.97
    # λ = 0: one-step TD targets
    assert torch.allclose(lambda_returns(r, c, v, g, 0.0), r + g * c * v)
    # λ = 1: discounted Monte-Carlo returns bootstrapped with the last value
    mc = torch.empty(N, H)
    last = v[:, -1]
    for t in reversed(range(H)):
        last = r[:, t] + g * c[:, t] * last
        mc[:, t] = last
    assert torch.allclose(lambda_returns(r, c, v, g, 1.0), mc)
    # a terminal step (c = 0) cuts everything after it
    c2 = torch.ones(N, H)
    c2[:, 1] = 0
    out = lambda_returns(r, c2, v, g, 0.95)
    assert torch.allclose(out[:, 1], r[:, 1])


def test_replay_lambda_returns_by_hand():
    # two windows of T = 5 real rows; reward[t] = r_{t+1}, value[t] = v(s_t)
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    v = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0], [7.0, 8.0, 9.0, 6.0, 5.0]])
    term = torch.zeros(2, 5, dtype=torch.bool)
    nxt = torch.ones(2, 5, dtype=torch.bool)
    nxt[:, -1] = False                                  # the window's last row has no next state here
    term[0, 1] = True                                   # window 0: the episode ends after row 1 ...
    nxt[0, 1] = False                                   # ... and row 2 starts the next one
    nxt[1, 2] = False                                   # window 1: a time limit cuts after row 2 (not terminated)
    g, lam = 0.9, 0.8
    R, w = replay_lambda_returns(r, term, nxt, v, g, lam)
    # window 0
    R03 = 4 + g * ((1 - lam) * 50 + lam * 50)           # row 4 has no target: R_4 = v_4 = 50
    R02 = 3 + g * ((1 - lam) * 40 + lam * R03)
    R01 = 2.0                                           # terminated: the reward only
    R00 = 1 + g * ((1 - lam) * 20 + lam * R01)
    # window 1: rows 2 and 4 have no target (R = v); row 3 bootstraps from row 4
    R13 = 1 + g * ((1 - lam) * 5 + lam * 5)
    R11 = 1 + g * ((1 - lam) * 9 + lam * 9)
    R10 = 1 + g * ((1 - lam) * 8 + lam * R11)
    assert torch.allclose(R, torch.tensor([[R00, R01, R02, R03, 50.0], [R10, R11, 9.0, R13, 5.0]]))
    assert torch.equal(w, torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 0, 1, 0]]))
    # λ = 1 along one episode without an end: discounted rewards plus the last row's value
    links = torch.tensor([[True, True, True, True, False]])
    R1, _ = replay_lambda_returns(r[:1], torch.zeros(1, 5, dtype=torch.bool), links, v[:1], g, 1.0)
    assert torch.allclose(R1[0, 3], torch.tensor(4 + g * 50.0))
    assert torch.allclose(R1[0, 0], torch.tensor(1 + g * 2 + g ** 2 * 3 + g ** 3 * 4 + g ** 4 * 50))


def test_twohot_roundtrip_and_loss():
    th = TwoHot(255)
    x = torch.tensor([-300.0, -1.0, 0.0, 0.37, 5.0, 1234.0])
    target = th.encode(x)
    assert target.shape == (6, 255)
    assert torch.allclose(target.sum(-1), torch.ones(6))
    assert ((target > 0).sum(-1) <= 2).all()                 # at most two neighbouring bins
    decoded = symexp((target * th.bins).sum(-1))            # expectation in symlog space, then back
    assert torch.allclose(decoded, x, rtol=1e-4, atol=1e-4)
    logits = torch.log(target.clamp(min=1e-12))
    assert torch.allclose(th.decode(logits), x, rtol=1e-3, atol=1e-3)
    # the loss is smallest at the target
    assert (th.loss(logits, x) < th.loss(torch.zeros(6, 255), x)).all()
    assert torch.allclose(symexp(symlog(x)), x)


def test_return_norm_scale_is_ema_of_percentile_range_floored_at_one():
    rn = ReturnNorm(decay=0.5)
    ret = torch.linspace(0, 100, 101)                        # P95 - P5 = 90
    assert float(rn(ret)) == pytest.approx(90.0)
    assert float(rn(ret * 0)) == pytest.approx(45.0)         # EMA: 0.5 * 90 + 0.5 * 0
    small = ReturnNorm()
    assert float(small(torch.full((10,), 0.3))) == 1.0       # range 0 -> floor 1
    state = rn.state_dict()
    rn2 = ReturnNorm(decay=0.5)
    rn2.load_state_dict(state)
    assert float(rn2.scale) == pytest.approx(45.0)


def test_actor_discrete_and_continuous():
    torch.manual_seed(0)
    a = Actor(F, {"kind": "discrete", "n": 4}, hidden=16, layers=2)
    feat = torch.randn(N, H, F)
    dist = a(feat)
    assert dist.probs.shape == (N, H, 4)
    assert (dist.probs >= 0.01 / 4 - 1e-7).all()              # 1% unimix: every action stays possible
    assert a.act(feat).shape == (N, H) and a.act(feat, deterministic=True).shape == (N, H)
    c = Actor(F, {"kind": "continuous", "dim": 2, "low": [-1.0, 0.0], "high": [1.0, 3.0]}, hidden=16, layers=2)
    x = c.act(torch.randn(50, F) * 5)
    assert x.shape == (50, 2)
    assert (x[:, 0] >= -1).all() and (x[:, 0] <= 1).all() and (x[:, 1] >= 0).all() and (x[:, 1] <= 3).all()
    mean = c(torch.zeros(1, F)).mean                          # zero-initialised head: the middle of the box
    assert torch.allclose(mean, torch.tensor([[0.0, 1.5]]))


def _grpo_batch(agent, G=4, n=2):
    torch.manual_seed(1)
    M = n * G
    score = torch.randn(M)
    grouped = score.reshape(n, G)
    adv = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + agent.cfg.grpo_std_floor)
    return {"feat": torch.randn(M, H, F), "action": torch.randint(3, (M, H)), "weight": torch.ones(M, H),
            "old_logp": torch.full((M, H), math.log(1 / 3)), "reward": torch.randn(M, H),
            "returns": torch.randn(M, H), "value": torch.randn(M, H), "score": score, "grouped": grouped,
            "adv": adv.reshape(M, 1).expand(-1, H)}


def test_grpo_advantages_are_group_relative():
    b = _grpo_batch(GRPO(AgentConfig(kind="grpo", group_size=4), F, {"kind": "discrete", "n": 3}))
    adv = b["adv"][:, 0].reshape(2, 4)
    assert torch.allclose(adv.mean(1), torch.zeros(2), atol=1e-6)
    assert (adv.std(1) < 1.0).all()                          # the std floor shrinks them below unit size


def test_grpo_advantage_modes():
    act = {"kind": "discrete", "n": 3}
    # two groups of four: one success among failures, and four rollouts equal up to prediction noise
    grouped = torch.tensor([[0.9, 0.0, 0.0, 0.0], [0.2, 0.2 + 1e-6, 0.2, 0.2 - 1e-6]])
    centred = grouped - grouped.mean(1, keepdim=True)
    std = GRPO(AgentConfig(kind="grpo", group_size=4, grpo_advantage="group_std"), F, act)
    adv = std.advantages(grouped)
    assert adv[0, 0] == pytest.approx(0.675 / (0.45 + 0.05))             # std of [0.9, 0, 0, 0] = 0.45
    assert adv[1].abs().max() < 1e-4                                     # noise stays noise (the floor)
    scaled = GRPO(AgentConfig(kind="grpo", group_size=4, grpo_advantage="return_scale"), F, act)
    assert torch.allclose(scaled.advantages(grouped), centred)           # percentile range < 1: scale 1
    assert scaled.advantages(grouped)[0, 0] == pytest.approx(0.675)     # no per-group std: no unit-size push
    big = torch.tensor([[30.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    rng = torch.quantile(big.flatten(), 0.95) - torch.quantile(big.flatten(), 0.05)    # 21.25
    fresh = GRPO(AgentConfig(kind="grpo", group_size=4, grpo_advantage="return_scale"), F, act)
    assert torch.allclose(fresh.advantages(big), (big - big.mean(1, keepdim=True)) / rng)  # first call: its own range


def test_losses_name_the_terms_the_loop_steps():
    act = {"kind": "discrete", "n": 3}
    ac = ActorCritic(AgentConfig(hidden_size=16), F, act)
    assert set(ac.optimizers) == {"actor", "critic"} and ac.epochs == 1
    b = {"feat": torch.randn(N, H, F), "action": torch.randint(3, (N, H)), "weight": torch.ones(N, H),
         "reward": torch.randn(N, H), "value": torch.zeros(N, H), "returns": torch.randn(N, H),
         "scale": torch.tensor(1.0), "adv": torch.randn(N, H)}
    losses, metrics = ac.losses(b)
    assert set(losses) == {"loss_actor", "loss_critic"}
    assert all(t.requires_grad and t.dim() == 0 for t in losses.values())
    assert all(k.startswith("agent/") for k in metrics)
    g = GRPO(AgentConfig(kind="grpo", group_size=4, epochs=3, hidden_size=16), F, act)
    assert g.epochs == 3
    gb = _grpo_batch(g)
    assert set(g.losses(gb, 0)[0]) == {"loss_actor", "loss_critic"}
    assert set(g.losses(gb, 1)[0]) == {"loss_actor"}          # the critic trains once per update
    # the actor loss only reaches the actor; the critic loss only the critic
    losses, _ = g.losses(gb, 0)
    losses["loss_actor"].backward()
    assert all(p.grad is None for p in g.critic.parameters())
    assert any(p.grad is not None for p in g.actor.parameters())


def test_entropy_scale_rises_below_its_floor_and_falls_back_above_it():
    n, base = 7, 3e-4
    es = EntropyScale(base, {"kind": "discrete", "n": n}, fraction=0.3, rate=0.1, max_ratio=100)
    target = 0.3 * math.log(n)
    w = torch.ones(5, 3)
    assert es.scale.item() == pytest.approx(base)
    es.observe(torch.full((5, 3), target - 0.5), w)
    es.step()
    assert es.scale.item() == pytest.approx(base * math.exp(0.05), rel=1e-5)     # log += 0.1 x 0.5
    for _ in range(200):                                                          # a collapsed policy
        es.observe(torch.full((5, 3), 0.05), w)
        es.step()
    assert es.scale.item() == pytest.approx(base * 100, rel=1e-5)                # clamped at max_ratio
    # the mean is weighted: steps after a predicted termination do not count
    es.observe(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert es.entropy.item() == pytest.approx(2.0)
    for _ in range(200):                                                          # back above the floor
        es.observe(torch.full((5, 3), 1.5), w)
        es.step()
    assert es.scale.item() == pytest.approx(base, rel=1e-5)
    box = EntropyScale(base, {"kind": "continuous", "dim": 2, "low": [-1, -1], "high": [1, 1]}, 0.3, 0.1, 100)
    fixed = EntropyScale(base, {"kind": "discrete", "n": n}, 0.0, 0.1, 100)
    for es2 in (box, fixed):
        es2.observe(torch.full((5, 3), -3.0), w)
        es2.step()
        assert es2.scale == base                                                  # no floor: the fixed scale


@pytest.mark.parametrize("kind", ["actor_critic", "grpo"])
def test_both_agents_raise_the_entropy_bonus_of_a_collapsed_policy(kind):
    torch.manual_seed(0)
    act = {"kind": "discrete", "n": 3}
    agent = build_agent(AgentConfig(kind=kind, group_size=4, hidden_size=16), F, act)
    with torch.no_grad():                                       # a policy that always picks action 0
        agent.actor.net[-1].bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
    b = _grpo_batch(agent) if kind == "grpo" else {
        "feat": torch.randn(N, H, F), "action": torch.randint(3, (N, H)), "weight": torch.ones(N, H),
        "reward": torch.randn(N, H), "value": torch.zeros(N, H), "returns": torch.randn(N, H),
        "scale": torch.tensor(1.0), "adv": torch.zeros(N, H)}
    base = agent.entropy_scale.base
    _, metrics = agent.losses(b, 0)
    assert metrics["agent/entropy_scale"] == pytest.approx(base)
    assert metrics["agent/entropy"] < 0.3 * math.log(3)          # unimix keeps it above 0, far below the floor
    agent.after_update()
    raised = agent.entropy_scale.scale.item()
    assert raised > base
    # the loss reads the raised scale: only the entropy term depends on it
    b["adv"] = torch.zeros_like(b["adv"])
    loss_at = lambda: agent.losses(b, 1)[0]["loss_actor"].item()
    high = loss_at()
    agent.entropy_scale.log_scale.fill_(math.log(base))
    low = loss_at()
    assert high < low                                            # a larger bonus, a lower loss
    # exact resume: the scale travels in extra_state
    agent.entropy_scale.log_scale.fill_(math.log(raised))
    other = build_agent(AgentConfig(kind=kind, group_size=4, hidden_size=16), F, act)
    other.load_extra_state(agent.extra_state())
    assert other.entropy_scale.scale.item() == pytest.approx(raised)


def test_build_agent_rejects_unknown_kind():
    with pytest.raises(ValueError, match="agent.kind must be one of"):
        build_agent(AgentConfig(kind="dqn"), F, {"kind": "discrete", "n": 3})


def prefilled_trainer(run_dir, overrides):
    """A debug-config Trainer whose replay can give its first batch."""
    from agents.trainer import Trainer
    cfg = load_config(["default.yaml", "debug.yaml"], ["trainer.progress=false", *overrides])
    tr = Trainer(cfg, str(run_dir), quiet=True)
    tr.start_collection()
    while tr.step < cfg.trainer.prefill or not tr.replay.ready():
        tr.collect_step()
    return tr


@pytest.fixture
def trainer(tmp_path):
    return prefilled_trainer(tmp_path / "run", ["trainer.prefill=20", "trainer.max_nonfinite_skips=3"])


@pytest.mark.parametrize("term", ["actor", "critic"])
def test_nonfinite_agent_loss_is_skipped_before_any_weight_moves(trainer, monkeypatch, term):
    """Either loss non-finite: neither optimiser steps (the critic's comes after the actor's)."""
    real = trainer.agent.losses

    def poisoned(batch, epoch=0):
        losses, metrics = real(batch, epoch)
        return {k: v * float("nan") if k == f"loss_{term}" else v for k, v in losses.items()}, metrics
    monkeypatch.setattr(trainer.agent, "losses", poisoned)
    before = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
    opt_before = len(trainer.agent.actor_opt.state)
    with pytest.warns(UserWarning, match=f"non-finite agent {term} loss"):
        out = trainer.train_step()
    assert out == {"train/skipped_updates": 1.0}
    after = trainer.agent.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)     # actor, critic, slow critic untouched
    assert all(torch.isfinite(p).all() for p in trainer.agent.parameters())
    assert len(trainer.agent.actor_opt.state) == opt_before          # Adam never saw the NaN
    from agents.trainer import TrainingError
    with pytest.raises(TrainingError, match="non-finite for 3 updates in a row"):
        with pytest.warns(UserWarning):
            trainer.train_step()
            trainer.train_step()


def test_a_finite_update_steps_every_optimiser(trainer):
    before = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
    out = trainer.train_step()
    for k in ("loss/actor", "loss/critic", "agent/actor_gnorm", "agent/critic_gnorm", "loss/world"):
        assert math.isfinite(out[k]), k
    after = trainer.agent.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"actor", "critic", "slow_critic"} <= changed


@pytest.mark.parametrize("kind", ["actor_critic", "grpo"])
def test_replay_critic_trains_the_critic_on_the_replayed_rows(tmp_path, kind):
    """agent.replay_critic > 0 adds a critic loss on the real rows of the world model's batch; its
    targets are replay_lambda_returns of the batch's own rewards, terminations and episode links."""
    tr = prefilled_trainer(tmp_path / "run", ["trainer.prefill=40", f"agent.kind={kind}", "agent.replay_critic=0.3"])
    cfg = tr.cfg
    seen = {}
    real = tr.agent.replay_targets

    def spy(feat, reward, terminated, next_valid):
        seen.update(reward=reward, terminated=terminated, next_valid=next_valid)
        return real(feat, reward, terminated, next_valid)
    tr.agent.replay_targets = spy
    out = tr.train_step()
    B, T = cfg.trainer.batch_size, cfg.trainer.seq_len
    assert seen["reward"].shape == seen["next_valid"].shape == (B, T)
    assert not seen["next_valid"][:, -1].any()                        # the window's last row has no next
    assert (seen["next_valid"] | seen["terminated"]).any()
    assert math.isfinite(out["agent/replay_critic_loss"]) and out["agent/replay_critic_loss"] > 0
    # off (the default): no replay term
    cfg_off = load_config(["default.yaml", "debug.yaml"], ["trainer.progress=false", "trainer.prefill=40"])
    assert cfg_off.agent.replay_critic == 0.0
    with pytest.raises(Exception, match="agent.replay_critic must be >= 0"):
        load_config(["default.yaml", "debug.yaml"], ["agent.replay_critic=-1"])


def test_feature_linear_by_index_equals_the_dense_linear():
    # FeatureLinear on LatentFeatures (z by index) == on the dense [z one-hot, h], == the nn.Linear
    # it was split from: values, and gradients of every weight and of h
    from quatrix_world.features import FeatureLinear, LatentFeatures, latent_index
    torch.manual_seed(0)
    G, C, Hd, out = 4, 6, 7, 9
    lin = torch.nn.Linear(G * C + Hd, out)
    layer = FeatureLinear.from_linear(lin, G, C)
    index = torch.randint(0, C, (N, H, G))                   # [3, 5, 4]
    h = torch.randn(N, H, Hd)
    dense = LatentFeatures(index, h).dense(C)                 # [3, 5, 31]
    assert dense.shape == (N, H, G * C + Hd) and torch.equal(latent_index(dense[..., :G * C], G), index)
    g = torch.randn(N, H, out)
    results = []
    for x in (LatentFeatures(index, h.clone().requires_grad_()), dense[..., :G * C].clone()):
        layer.zero_grad()
        if isinstance(x, LatentFeatures):
            y, hx = layer(x), x.h
        else:
            hx = h.clone().requires_grad_()
            y = layer(torch.cat([x, hx], -1))
        y.backward(g)
        results.append((y.detach(), layer.weight.grad.clone(), layer.bias.grad.clone(), hx.grad.clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(results[0][0], lin(dense), atol=1e-5)
    assert torch.equal(layer.weight, lin.weight) and layer.state_dict().keys() == lin.state_dict().keys()


def test_random_actions_explore_while_collecting_only(tmp_path, monkeypatch):
    """trainer.random_actions: after the prefill, that share of collected steps acts at random (0: none)."""
    for share, (lo, hi) in ((0.3, (0.2, 0.4)), (0.0, (0.0, 0.0))):
        tr = prefilled_trainer(tmp_path / f"run{share}", ["trainer.prefill=20", f"trainer.random_actions={share}"])
        calls = []
        real = tr.collector.step
        monkeypatch.setattr(tr.collector, "step", lambda random=False: calls.append(random) or real(random=random))
        for _ in range(150):
            tr.collect_step()
        assert lo <= sum(calls) / len(calls) <= hi, (share, sum(calls))
