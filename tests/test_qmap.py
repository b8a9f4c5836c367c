"""q_map: the dynamics core's routing weights — normalised, causal, episode-masked, equal to what
the core actually uses; PNG output."""
import os

import pytest
import torch

from quatrix_world.config import EncoderConfig, WorldConfig
from quatrix_world.qmap import q_map, q_map_for_rollout, save_q_map_png
from quatrix_world.world import QuatrixWorld

B, T, D, N_ACT = 3, 9, 5, 4
OBS = {"observation": {"kind": "vector", "shape": [D], "dtype": "float32", "vocab": None}}
ACT = {"kind": "discrete", "n": N_ACT}


def small_world(**kw):
    cfg = WorldConfig(latent_groups=4, latent_classes=6, hidden_size=24, num_layers=2, q_rank=8, num_heads=2,
                      max_seq_len=48, encoder=EncoderConfig(hidden_size=20, q_rank=4, num_heads=2), **kw)
    torch.manual_seed(0)
    return QuatrixWorld(cfg, OBS, ACT)


def inputs(world, start=4):
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.one_hot(torch.randint(6, (B, T, 4), generator=g), 6).float().flatten(-2)
    a = torch.randint(N_ACT, (B, T), generator=g)
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, start] = True                  # row 1: a second episode starts at `start`
    return z, a, is_init


def check_weights(w, is_init, start=4):
    assert w.shape == (B, 2, T, T)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(B, 2, T), atol=1e-5)             # rows sum to 1
    upper = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (w[..., upper] == 0).all()                                              # causal
    assert (w[1, :, start:, :start] == 0).all()                                    # not across the start
    assert (w[0, :, start:, :start] > 0).all()                                     # row 0: one episode
    assert torch.allclose(w[1, :, start, start], torch.ones(2))                    # first step sees itself only


@pytest.mark.parametrize("layer", [0, -1])
@pytest.mark.parametrize("compressed", [False, True])
def test_q_map_normalised_causal_episode_masked(layer, compressed):
    w_ = small_world(compressed=compressed)
    z, a, is_init = inputs(w_)
    check_weights(q_map(w_, z, a, is_init, layer=layer), is_init)
    check_weights(q_map(w_, z, a, is_init.unsqueeze(-1), layer=layer), is_init)    # [B, T, 1] accepted


@pytest.mark.parametrize("layer", [0, 1])
def test_q_map_is_what_the_core_uses(layer):
    """W_o(Q @ content) with q_map's Q reproduces the mixer's output inside run_core."""
    w_ = small_world()
    z, a, is_init = inputs(w_)
    seen = {}
    mixer = w_.core.blocks[layer].mixer
    hook = mixer.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    with torch.no_grad():
        w_.run_core(z, a, is_init)
    hook.remove()
    Q = q_map(w_, z, a, is_init, layer=layer)
    content = mixer._heads(seen["x"])
    out = mixer.W_o((Q @ content).transpose(1, 2).reshape(B, T, -1))
    assert torch.allclose(out, seen["out"], atol=1e-5)


def test_q_map_mha_gives_attention_weights():
    w_ = small_world(mixer="mha")
    z, a, is_init = inputs(w_)
    check_weights(q_map(w_, z, a, is_init), is_init)


def test_q_map_bad_input():
    w_ = small_world()
    z, a, is_init = inputs(w_)
    with pytest.raises(ValueError, match="layer"):
        q_map(w_, z, a, is_init, layer=2)
    with pytest.raises(ValueError, match="z must be"):
        q_map(w_, z[..., :-1], a, is_init)
    with pytest.raises(ValueError, match="is_init"):
        q_map(w_, z, a, is_init[:, :-1])


def test_q_map_keeps_training_mode():
    w_ = small_world()
    w_.train()
    q_map(w_, *inputs(w_))
    assert w_.training


def test_q_map_for_rollout_and_png(tmp_path):
    w_ = small_world()
    z, a, is_init = inputs(w_)
    K, horizon = 5, 6
    state = w_.observe_latents(z[:, :K], a[:, :K], is_init[:, :K])
    policy = lambda feat: torch.distributions.Categorical(logits=torch.zeros(feat.shape[0], N_ACT))  # noqa: E731
    out = q_map_for_rollout(w_, state, policy, horizon)
    S = K - 1 + horizon
    w = out["weights"]
    assert w.shape == (B, 2, S, S) and out["context"] == K - 1
    assert out["rollout"].batch_size == torch.Size([B, horizon])
    assert torch.allclose(w.sum(-1), torch.ones(B, 2, S), atol=1e-5)
    assert (w[1, :, 4:, :4] == 0).all()           # row 1's episode started at step 4: imagination stays in it
    assert (w[..., torch.ones(S, S, dtype=torch.bool).triu(1)] == 0).all()

    path = tmp_path / "sub" / "q.png"
    assert save_q_map_png(w, path, title="untrained", context=out["context"]) == str(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert os.listdir(path.parent) == ["q.png"]                    # atomic: no temp file left
    save_q_map_png(w[0, 0], path)                                  # [T, T] too, overwriting
    with pytest.raises(ValueError, match="weights"):
        save_q_map_png(torch.zeros(3, 4), tmp_path / "bad.png")


def test_q_map_figure_has_whole_step_ticks_and_a_labelled_context_line():
    from quatrix_world.qmap import q_map_figure
    fig = q_map_figure(torch.softmax(torch.randn(7, 7), -1), context=3)
    ax = fig.axes[0]
    fig.canvas.draw()
    for ticks in (ax.get_xticks(), ax.get_yticks()):
        assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["imagination starts (after 3 real steps)"]
