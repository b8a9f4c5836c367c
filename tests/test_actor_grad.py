"""Actor-critic's two actor gradients: REINFORCE, and the return differentiated through the
imagined dynamics (`agent.actor_grad=dynamics`, continuous actions)."""
import pytest
import torch
from tensordict import TensorDict

from agents import build_agent
from agents.common import ReturnNorm
from quatrix_world.config import AgentConfig, ConfigError, EncoderConfig, WorldConfig, load_config
from quatrix_world.world import QuatrixWorld

B, T, D, A = 3, 7, 5, 2              # distinct sizes so broadcasting bugs show
OBS = {"observation": {"kind": "vector", "shape": [D], "dtype": "float32", "vocab": None}}
BOX = {"kind": "continuous", "dim": A, "low": [-1.0, -2.0], "high": [1.0, 2.0]}


def box_world():
    cfg = WorldConfig(latent_groups=4, latent_classes=6, hidden_size=24, num_layers=2, q_rank=8, num_heads=2,
                      max_seq_len=48, encoder=EncoderConfig(hidden_size=20, q_rank=4, num_heads=2))
    torch.manual_seed(0)
    w = QuatrixWorld(cfg, OBS, BOX)
    for net in (w.reward_net, w.cont_net):            # heads that depend on the state
        torch.nn.init.normal_(net[-1].weight, std=0.3)
    return w


def episode_batch():
    steps = torch.arange(T, dtype=torch.float32)
    return TensorDict({
        "observation": steps[None, :, None].expand(B, T, D).clone(),
        "action": torch.linspace(-1, 1, T * A).reshape(1, T, A).expand(B, T, A).clone(),
        "is_init": torch.zeros(B, T, 1, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
        "next": {"reward": steps[None, :, None].expand(B, T, 1).clone(),
                 "terminated": torch.zeros(B, T, 1, dtype=torch.bool),
                 "truncated": torch.zeros(B, T, 1, dtype=torch.bool)},
    }, batch_size=[B, T])


def to_double(state: dict) -> dict:
    def conv(v):
        if torch.is_tensor(v):
            return v.double() if v.is_floating_point() else v
        return v.to(torch.float64) if hasattr(v, "repeat_interleave") else v     # the layer caches
    return {k: conv(v) for k, v in state.items()}


def agent_for(world, actor_grad, latent=True, **kw):
    cfg = AgentConfig(hidden_size=16, horizon=5, actor_grad=actor_grad, entropy=0.0, **kw)
    agent = build_agent(cfg, world.feat_dim, world.act_desc, latent=world.latent_shape if latent else None)
    for p in list(agent.actor.parameters()) + list(agent.slow_critic.parameters()):
        torch.nn.init.normal_(p, std=0.3)
    return agent


def actor_loss(agent, world, start, seed=5):
    torch.manual_seed(seed)
    agent.retnorm = ReturnNorm()                      # the same scale on every call
    b = agent.rollout(world, start)
    return agent.losses(b, 0)[0]["loss_actor"], b


@pytest.mark.parametrize("latent", [True, False])
def test_dynamics_gradient_is_the_derivative_of_the_imagined_return(latent, monkeypatch):
    # float64 and the same random draws: the gradient the actor receives is the derivative of the
    # imagined λ-returns through the whole imagination (actions -> core -> reward/continue heads,
    # slow critic, the next actions), checked against finite differences. The clip into the box
    # (straight-through, tested below) is left out: finite differences see its zero slope.
    world = box_world()
    monkeypatch.setattr(world, "in_box", lambda a: a)
    start = to_double(world.observe(episode_batch()))     # the encoder reads float32 observations
    world.double()
    agent = agent_for(world, "dynamics", latent=latent).double()
    loss, b = actor_loss(agent, world, start)
    assert "objective" in b and b["objective"].requires_grad
    bias = agent.actor.net[-1].bias                   # [2A]: the mean's and the std's pre-activations
    agent.actor.zero_grad()
    (b["objective"] * b["scale"]).sum().backward()    # objective = (returns - sg(value)) / scale
    assert all(p.grad is None for p in world.parameters())          # the world model only passes it on
    assert all(p.requires_grad for p in world.parameters())         # ... and is trainable again after
    returns = lambda: actor_loss(agent, world, start)[1]["returns"].sum().item()
    eps = 1e-6
    for j in range(2 * A):
        with torch.no_grad():
            bias[j] += eps
            up = returns()
            bias[j] -= 2 * eps
            down = returns()
            bias[j] += eps
        assert bias.grad[j].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), j
    assert bias.grad.abs().min() > 0
    # the actor loss: -mean(weight x objective) (entropy scale 0 here)
    assert torch.allclose(loss, -(b["weight"] * b["objective"]).mean())


def test_imagined_actions_reach_the_world_clipped_into_the_box_with_a_straight_through_gradient():
    world = box_world()
    a = torch.tensor([[-3.0, 0.5], [0.2, 9.0]], requires_grad=True)
    out = world.in_box(a)
    assert torch.equal(out, torch.tensor([[-1.0, 0.5], [0.2, 2.0]]))          # low [-1, -2], high [1, 2]
    (out * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert torch.equal(a.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))       # identity gradient
    # in imagination the core gets the clipped action, the rollout keeps the sampled one (its logp)
    seen = []
    real = world.a_in.forward
    world.a_in.forward = lambda x: (seen.append(x.detach().clone()), real(x))[1]
    wide = lambda feat: torch.distributions.Independent(torch.distributions.Normal(
        torch.zeros(feat.shape[0], A), torch.full((feat.shape[0], A), 50.0)), 1)
    traj = world.imagine(world.observe(episode_batch()), wide, horizon=3)
    acted = torch.cat([x.reshape(-1, A) for x in seen[-3:]])
    assert (traj["action"].abs() > 2).any()
    assert (acted[:, 0].abs() <= 1).all() and (acted[:, 1].abs() <= 2).all()


def test_box_policy_std_stays_between_a_tenth_and_one_half_width():
    from agents.common import Actor
    actor = Actor(8, BOX, hidden=16, layers=2)
    for bias in (-50.0, 0.0, 50.0):
        torch.nn.init.constant_(actor.net[-1].bias, bias)
        std = actor(torch.randn(6, 8)).base_dist.scale
        half = torch.tensor([1.0, 2.0])
        assert (std >= 0.1 * half - 1e-6).all() and (std <= half + 1e-6).all()


def test_reinforce_builds_no_graph_through_the_world_and_differs_from_dynamics():
    world = box_world()
    start = world.observe(episode_batch())
    rf, dyn = agent_for(world, "reinforce"), agent_for(world, "dynamics")
    dyn.load_state_dict(rf.state_dict())
    loss_rf, b_rf = actor_loss(rf, world, start)
    loss_dyn, b_dyn = actor_loss(dyn, world, start)
    assert "objective" not in b_rf and not b_rf["returns"].requires_grad
    # the same draws give the same imagined rollout; only the gradient's route differs
    assert torch.equal(b_rf["action"], b_dyn["action"]) and torch.allclose(b_rf["returns"], b_dyn["returns"])
    g = []
    for agent, loss in ((rf, loss_rf), (dyn, loss_dyn)):
        agent.actor.zero_grad()
        loss.backward()
        g.append(agent.actor.net[-1].bias.grad.clone())
    assert not torch.allclose(g[0], g[1])
    # the critic learns from detached targets either way
    assert not any(t.requires_grad for k, t in b_dyn.items() if k not in ("objective", "feat"))


def test_auto_picks_dynamics_for_box_actions_and_reinforce_for_discrete():
    world = box_world()
    assert agent_for(world, "auto").dynamics_grad and not agent_for(world, "reinforce").dynamics_grad
    disc = build_agent(AgentConfig(hidden_size=16, actor_grad="auto"), 10, {"kind": "discrete", "n": 3})
    assert not disc.dynamics_grad
    with pytest.raises(ConfigError, match="needs continuous"):
        build_agent(AgentConfig(hidden_size=16, actor_grad="dynamics"), 10, {"kind": "discrete", "n": 3})
    with pytest.raises(ConfigError, match="needs agent.kind=actor_critic"):
        load_config(["default.yaml"], ["agent.kind=grpo", "agent.actor_grad=dynamics"])
