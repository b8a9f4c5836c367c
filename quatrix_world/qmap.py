"""Q(s, a) routing maps of the world model's dynamics core: which past steps each step reads.

    w = q_map(world, z, action, is_init)          # [B, heads, T, T], rows sum to 1 over allowed keys
    save_q_map_png(w, "qmap.png", title="...")    # heatmap of sample 0, mean over heads

    out = q_map_for_rollout(world, state, policy, horizon)   # context + imagined steps
    save_q_map_png(out["weights"], "rollout.png")

The maps are computed exactly as `QuatrixWorld.run_core` runs the core: the same tokens
(z_in(z) + a_in(a) + pos), the same episode mask (no step reads across an episode start) and the
same input to the chosen layer's mixer (the residual stream after the earlier blocks, through that
block's ``ln1``). Q-Compass layers give softmax(state . action^T / sqrt(r_head)); an MHA core
(``world.mixer=mha``) gives its attention weights softmax(q . k^T / sqrt(d_head)).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .errors import UsageError
from .files import atomic_path
from .qcompass import MHA, QCompass, routing_weights

__all__ = ["q_map", "q_map_for_rollout", "save_q_map_png"]


def _mha_weights(mixer: MHA, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
    return routing_weights(mixer._heads(mixer.W_q(x)), mixer._heads(mixer.W_k(x)), mixer.scale, attn_mask,
                           mixer.causal)


@torch.no_grad()
def q_map(world, z: torch.Tensor, action: torch.Tensor, is_init: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Routing weights of core layer ``layer`` over a token sequence -> [B, heads, T, T].

    z [B, T, Z] (one-hot latents, as in ``world.loss``/``observe_latents``), action [B, T] (discrete
    ids) or [B, T, d] (continuous), is_init [B, T] or [B, T, 1] bool. Entry [b, h, t, s] is how much
    step t reads step s: zero for s > t (causal) and for s before the last episode start <= t.
    """
    if z.dim() != 3 or z.shape[-1] != world.z_dim:
        raise UsageError(f"z must be [B, T, {world.z_dim}] (latent_groups*latent_classes), got {tuple(z.shape)}")
    if is_init.dim() == 3 and is_init.shape[-1] == 1:
        is_init = is_init.squeeze(-1)
    if is_init.shape != z.shape[:2]:
        raise UsageError(f"is_init must be [B, T] = {list(z.shape[:2])}, got {tuple(is_init.shape)}")
    if action.shape[:2] != z.shape[:2]:
        raise UsageError(f"action must start with [B, T] = {list(z.shape[:2])}, got {tuple(action.shape)}")
    blocks = world.core.blocks
    n = len(blocks)
    if n == 0:
        raise UsageError("the world's core has no layers, so it has no routing map")
    if not -n <= layer < n:
        raise UsageError(f"layer must be in [{-n}, {n - 1}] for a {n}-layer core, got {layer}")
    layer = layer % n
    B, T = is_init.shape
    if T > world.cfg.max_seq_len:
        raise UsageError(f"sequence of {T} steps exceeds world.max_seq_len={world.cfg.max_seq_len}")
    is_init = is_init.bool()
    # the exact mask and tokens of QuatrixWorld.run_core
    ep = world.episode_ids(is_init)
    mask = (ep[:, :, None] == ep[:, None, :]).unsqueeze(1)                  # [B, 1, T, T]
    pos = torch.arange(T, device=z.device).expand(B, T)
    was_training = world.training
    world.eval()                                                             # no dropout in the picture
    try:
        x = world.token(z, action, pos)
        for block in blocks[:layer]:
            x = block(x, attn_mask=mask)
        block = blocks[layer]
        x = block.ln1(x)                                                     # QuatrixBlock.forward's mixer input
        if isinstance(block.mixer, QCompass):
            return block.mixer.q_map(x, attn_mask=mask)
        if isinstance(block.mixer, MHA):
            return _mha_weights(block.mixer, x, mask)
        raise UsageError(f"layer {layer}'s mixer is a {type(block.mixer).__name__}; q_map knows QCompass and MHA")
    finally:
        world.train(was_training)


@torch.no_grad()
def q_map_for_rollout(world, state: dict, policy, horizon: int, layer: int = -1) -> dict:
    """Imagine ``horizon`` steps from ``state`` (from ``world.observe``/``observe_latents``) and map
    the routing over the whole token sequence the cache saw: the K-1 context tokens, then one token
    per imagined step (z_t, a_t).

    -> {"weights": [N, heads, K-1+horizon, K-1+horizon], "rollout": TensorDict [N, horizon],
        "context": K-1}
    """
    ctx = state.get("context")
    if ctx is None:
        raise UsageError("state has no 'context' — build it with world.observe or world.observe_latents")
    rollout = world.imagine(state, policy, horizon)
    z_ctx, a_ctx, ep = ctx["z"][:, :-1], ctx["action"][:, :-1], ctx["ep"]
    z_im = world.split_features(rollout["feat"]).z
    a_im = rollout["action"]
    z = torch.cat([z_ctx, z_im], 1)
    a = torch.cat([a_ctx, a_im.to(a_ctx.dtype)], 1)
    # imagined steps continue the context's last episode
    ep_all = torch.cat([ep[:, :-1], ep[:, -1:].expand(-1, horizon)], 1)
    is_init = torch.zeros_like(ep_all, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[:, 1:] = ep_all[:, 1:] != ep_all[:, :-1]
    return {"weights": q_map(world, z, a, is_init, layer=layer), "rollout": rollout,
            "context": z_ctx.shape[1]}


def save_q_map_png(weights: torch.Tensor, path: str, title: Optional[str] = None, index: int = 0,
                   context: Optional[int] = None) -> str:
    """Heatmap of one [T, T] routing map (mean over heads) -> PNG at ``path``, written atomically.

    weights: [B, heads, T, T] (sample ``index`` is drawn), [heads, T, T] or [T, T].
    context: if given, a line marks where imagined steps begin (``q_map_for_rollout``'s "context").
    """
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() == 4:
        w = w[index]
    if w.dim() == 3:
        w = w.mean(0)
    if w.dim() != 2 or w.shape[0] != w.shape[1]:
        raise UsageError(f"weights must be [B, heads, T, T], [heads, T, T] or [T, T]; got {tuple(weights.shape)}")
    fig = q_map_figure(w, title, context)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def q_map_figure(w: torch.Tensor, title: Optional[str] = None, context: Optional[int] = None):
    """The heatmap of a [T, T] map as a matplotlib Figure (whole-step ticks; a labelled dashed line
    where imagination begins, when `context` is given)."""
    from matplotlib.figure import Figure                  # no pyplot: no global state, Agg canvas
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    T = w.shape[0]
    fig = Figure(figsize=(5.2, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-6),
                   interpolation="nearest", origin="upper", extent=(-0.5, T - 0.5, T - 0.5, -0.5))
    if context is not None and 0 < context < T:
        ax.axhline(context - 0.5, color="w", lw=0.8, ls="--", label=f"imagination starts (after {context} real steps)")
        ax.axvline(context - 0.5, color="w", lw=0.8, ls="--")
        ax.legend(loc="lower left", fontsize=7, framealpha=0.6)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # steps are whole numbers
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("past step")
    ax.set_ylabel("query step")
    ax.set_title(title or "Q(s, a) routing (mean over heads)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
