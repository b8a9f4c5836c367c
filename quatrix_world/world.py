"""QuatrixWorld: encode -> categorical latent -> causal Q-Compass core -> heads / decoder -> loss.

STORM's shape (one token per env step, a causal sequence core, KV-cache imagination) with
DreamerV3's robustness (categorical latents with unimix, symlog, two-hot rewards, KL balancing
with free bits).

Alignment (row t of a batch is the data contract's row t):
    token_t  = Linear(z_t) + embed(a_t) + pos_t            z_t = posterior sample of obs_t
    h_t      = core(token_0..t)                            causal, never across an is_init
    prior_t  = p(z_{t+1} | h_t)      reward_t = next.reward[t]      cont_t = 1 - next.terminated[t]
The agent's feature at step t is [z_t, h_{t-1}] (h_{-1} = learned h0 at an episode start): what
the model knows when it must choose a_t.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tensordict import TensorDict

from .blocks import QuatrixStack
from .config import WorldConfig
from .errors import UsageError
from .encoders import SpecError, build_decoder, build_encoder, describe_action, describe_obs, mlp
from .features import LatentFeatures, latent_index
from .latents import (TwoHot, categorical_entropy, categorical_kl, mode_onehot, onehot_like, sample_action,
                      sample_index, sample_onehot, unimix_logits, unimix_probs)
from .qcompass import LayerCaches


class Features(NamedTuple):
    """The parts of the agent's feature vector: z, the latent of the current observation (one-hots
    of latent_groups x latent_classes, flattened), and h, the core's output before the action."""
    z: torch.Tensor
    h: torch.Tensor


class QuatrixWorld(nn.Module):
    def __init__(self, cfg: WorldConfig, obs_spec, action_spec):
        super().__init__()
        self.cfg = cfg
        self.obs_desc = describe_obs(obs_spec, cfg.encoder.kinds)
        self.act_desc = describe_action(action_spec)
        G, C, H = cfg.latent_groups, cfg.latent_classes, cfg.hidden_size
        self.z_dim, self.h_dim = G * C, H
        self.feat_dim = G * C + H
        self.latent_shape = (G, C)               # z: G groups of C classes (agents read it by index)

        self.encoders = nn.ModuleDict({k: build_encoder(d, cfg.encoder) for k, d in self.obs_desc.items()})
        enc_dim = cfg.encoder.hidden_size * len(self.encoders)
        self.post_net = mlp(enc_dim, H, G * C, 1)

        self.z_in = nn.Linear(G * C, H)
        if self.act_desc["kind"] == "discrete":
            self.a_in = nn.Embedding(self.act_desc["n"], H)
        else:
            self.a_in = nn.Linear(self.act_desc["dim"], H)
            # the env clips actions into its box, so the model only ever saw in-box actions
            # (buffers outside the state dict: checkpoints load unchanged)
            self.register_buffer("act_low", torch.tensor(self.act_desc["low"], dtype=torch.float32), persistent=False)
            self.register_buffer("act_high", torch.tensor(self.act_desc["high"], dtype=torch.float32), persistent=False)
        self.pos = nn.Embedding(cfg.max_seq_len, H)
        self.core = QuatrixStack(cfg.num_layers, hidden_size=H, q_rank=cfg.q_rank, num_heads=cfg.num_heads,
                                 mixer=cfg.mixer, compressed=cfg.compressed, causal=True,
                                 dropout=cfg.dropout, max_seq_len=cfg.max_seq_len)
        self.h0 = nn.Parameter(torch.zeros(H))

        self.prior_net = mlp(H, H, G * C, 1)
        self.reward_net = mlp(H, H, cfg.reward_bins, 1)
        self.cont_net = mlp(H, H, 1, 1)
        nn.init.zeros_(self.reward_net[-1].weight)
        nn.init.zeros_(self.reward_net[-1].bias)
        dec_in = G * C + (H if cfg.decoder_uses_h else 0)
        self.decoders = nn.ModuleDict({k: build_decoder(dec_in, d, cfg.encoder, self.encoders[k])
                                       for k, d in self.obs_desc.items()})
        self.twohot = TwoHot(cfg.reward_bins)

    # ------------------------------------------------------------------ batch in

    def unpack(self, batch: TensorDict, need_targets: bool = True) -> dict:
        """The one place torchrl's trailing 1 is squeezed: -> obs [B,T,...], action, flags [B,T]."""
        need = ["action", "is_init"] + ([("next", "reward"), ("next", "terminated")] if need_targets else [])
        keys = batch.keys(include_nested=True)
        for k in need:
            if k not in keys:
                name = ".".join(k) if isinstance(k, tuple) else k
                raise SpecError(f"batch has no '{name}' — world-model batches need obs keys, action, is_init, "
                                "next.reward and next.terminated (see the data contract in DESIGN.md)")
        if batch.batch_dims != 2:
            raise SpecError(f"world-model batches are [B, T]; got batch_size {list(batch.batch_size)}")
        obs = {}
        for k, d in self.obs_desc.items():
            if k not in keys:
                raise SpecError(f"batch has no observation '{k}' but the model was built with keys "
                                f"{list(self.obs_desc)} — use a checkpoint made for this environment")
            x = batch[k]
            if list(x.shape[2:]) != list(d["shape"]):
                raise SpecError(f"observation '{k}' has shape {list(x.shape[2:])}, the model expects {d['shape']}")
            obs[k] = x
        out = {"obs": obs, "is_init": batch["is_init"].reshape(batch.batch_size).bool()}
        a = batch["action"]
        if self.act_desc["kind"] == "discrete":
            if a.shape[-1:] == (self.act_desc["n"],) and a.dim() == 3:   # one-hot given
                a = a.argmax(-1)
            out["action"] = a.reshape(batch.batch_size).long()
        else:
            out["action"] = a.reshape(*batch.batch_size, self.act_desc["dim"]).float()
        if need_targets:
            out["reward"] = batch["next", "reward"].reshape(batch.batch_size).float()
            out["terminated"] = batch["next", "terminated"].reshape(batch.batch_size).bool()
        return out

    # ------------------------------------------------------------------ pieces

    def encode(self, obs: dict) -> torch.Tensor:
        """obs {key: [B, T, ...]} -> posterior log-probs [B, T, G, C]."""
        B, T = next(iter(obs.values())).shape[:2]
        feats = [self.encoders[k](obs[k].flatten(0, 1)) for k in self.obs_desc]
        logits = self.post_net(torch.cat(feats, -1)).reshape(B, T, self.cfg.latent_groups, self.cfg.latent_classes)
        return unimix_logits(logits, self.cfg.unimix)

    def prior(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., H] -> prior log-probs of the next latent [..., G, C]."""
        return unimix_logits(self._prior_logits(h), self.cfg.unimix)

    def _prior_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.prior_net(h).reshape(*h.shape[:-1], self.cfg.latent_groups, self.cfg.latent_classes)

    def in_box(self, a: torch.Tensor) -> torch.Tensor:
        """A continuous action as the env executes it: clipped into the action box (the value);
        the gradient passes straight through, so the dynamics gradient still reaches the policy."""
        if self.act_desc["kind"] == "discrete":
            return a
        return a + (torch.max(torch.min(a, self.act_high), self.act_low) - a).detach()

    def token(self, z, a, pos):
        """z [..., Z], a [...] or [..., d], pos [...] -> [..., H]"""
        return self.z_in(z) + self.a_in(a) + self.pos(pos)

    @staticmethod
    def episode_ids(is_init: torch.Tensor) -> torch.Tensor:
        """[B, T] bool -> [B, T] int: a new id at every episode start (row 0 starts one too)."""
        starts = is_init.clone()
        starts[:, 0] = True
        return starts.long().cumsum(1)

    def run_core(self, z, a, is_init, caches=None):
        """Full causal pass over [B, T] tokens, masked so no token reads across an episode start."""
        B, T = is_init.shape
        ep = self.episode_ids(is_init)
        mask = (ep[:, :, None] == ep[:, None, :]).unsqueeze(1)          # [B, 1, T, T]
        pos = torch.arange(T, device=z.device).expand(B, T)
        return self.core(self.token(z, a, pos), attn_mask=mask, caches=caches)  # [B, T, H]

    def h_prev(self, h, is_init):
        """[B, T, H] core outputs -> the h each step's feature uses: h_{t-1}, h0 at starts."""
        prev = torch.cat([self.h0.expand(h.shape[0], 1, -1), h[:, :-1]], 1)
        start = is_init.clone()
        start[:, 0] = True
        return torch.where(start.unsqueeze(-1), self.h0.expand_as(prev), prev)

    # ------------------------------------------------------------------ loss

    def loss(self, batch: TensorDict):
        d = self.unpack(batch)
        cfg = self.cfg
        post = self.encode(d["obs"])                                     # [B, T, G, C]
        z = sample_onehot(post).flatten(-2)                              # [B, T, Z]
        h = self.run_core(z, d["action"], d["is_init"])                 # [B, T, H]
        prior = self.prior(h)                                            # p(z_{t+1} | h_t)

        valid = (~d["is_init"][:, 1:]).float()                           # pairs inside one episode
        n_valid = valid.sum().clamp(min=1)
        kl_dyn = categorical_kl(post[:, 1:].detach(), prior[:, :-1])
        kl_rep = categorical_kl(post[:, 1:], prior[:, :-1].detach())
        loss_dyn = (kl_dyn.clamp(min=cfg.free_bits) * valid).sum() / n_valid
        loss_rep = (kl_rep.clamp(min=cfg.free_bits) * valid).sum() / n_valid

        reward_logits = self.reward_net(h)
        loss_reward = self.twohot.loss(reward_logits, d["reward"]).mean()
        cont_logits = self.cont_net(h).squeeze(-1)
        cont_target = 1.0 - d["terminated"].float()
        loss_cont = F.binary_cross_entropy_with_logits(cont_logits, cont_target)

        dec_in = z if not cfg.decoder_uses_h else torch.cat([z, self.h_prev(h, d["is_init"])], -1)
        dec_in = dec_in.flatten(0, 1)
        recon = {k: self.decoders[k].loss(dec_in, d["obs"][k].flatten(0, 1)).mean() for k in self.obs_desc}
        loss_recon = sum(recon.values())

        total = (cfg.recon_scale * loss_recon + loss_reward + loss_cont
                 + cfg.dyn_scale * loss_dyn + cfg.rep_scale * loss_rep)

        with torch.no_grad():
            r_pred = self.twohot.decode(reward_logits)
            nz = d["reward"].abs() > 1e-6
            metrics = {f"loss/recon_{k}": v.detach() for k, v in recon.items()}
            metrics.update({
                "loss/reward": loss_reward.detach(), "loss/continue": loss_cont.detach(),
                "loss/dyn": loss_dyn.detach(), "loss/rep": loss_rep.detach(), "loss/world": total.detach(),
                "world/kl": ((kl_dyn * valid).sum() / n_valid),
                "world/post_entropy": categorical_entropy(post).mean(),
                "world/prior_entropy": categorical_entropy(prior).mean(),
                "world/reward_mae": (r_pred - d["reward"]).abs().mean(),
                "world/reward_acc": ((r_pred - d["reward"]).abs() < 0.1).float().mean(),
                "world/reward_acc_nonzero": (((r_pred - d["reward"]).abs() < 0.1) & nz).float().sum()
                / nz.float().sum().clamp(min=1),
                "world/cont_acc": ((cont_logits > 0).float() == cont_target).float().mean(),
            })
        aux = {"z": z.detach(), "h": h.detach(), "post": post.detach()}
        return total, metrics, aux

    # ------------------------------------------------------------------ observe / imagine

    def observe(self, batch: TensorDict, sample: bool = True) -> dict:
        """Real context [B, K] -> imagination start state (features, KV cache)."""
        d = self.unpack(batch, need_targets=False)
        with torch.no_grad():
            post = self.encode(d["obs"])
            z = (sample_onehot(post) if sample else mode_onehot(post)).flatten(-2)
        return self.observe_latents(z, d["action"], d["is_init"])

    @torch.no_grad()
    def observe_latents(self, z, action, is_init) -> dict:
        """z [B, K, Z], action [B, K], is_init [B, K] -> state at step K-1 (its action not yet taken).

        The first K-1 tokens (z_t, a_t) go through the core into the cache; the state holds z_{K-1}
        and h_{K-2} (or h0 if step K-1 starts an episode). Keys from before the last episode start
        are marked invalid so imagination never reads across it.
        """
        B, K = is_init.shape
        caches = LayerCaches.empty(len(self.core.blocks))
        ep = self.episode_ids(is_init)
        if K > 1:
            h = self.run_core(z[:, :-1], action[:, :-1], is_init[:, :-1], caches=caches)
            h_last = torch.where(is_init[:, -1].unsqueeze(-1), self.h0.expand(B, -1), h[:, -1])
            key_valid = ep[:, :-1] == ep[:, -1:]
        else:
            h_last = self.h0.expand(B, -1)
            key_valid = torch.zeros(B, 0, dtype=torch.bool, device=z.device)
        return {"z": z[:, -1], "h": h_last, "caches": caches, "key_valid": key_valid,
                "pos": K - 1, "context": {"z": z, "action": action, "ep": ep}}

    @staticmethod
    def features(z, h):
        """The agent's input [..., F] = [z_t, h_{t-1}] (see `Features`)."""
        return torch.cat([z, h], -1)

    def split_features(self, feat: torch.Tensor) -> "Features":
        """[..., F] -> Features(z [..., z_dim], h [..., h_dim]), views of `feat`."""
        return Features(*feat.split([self.z_dim, self.h_dim], -1))

    # ------------------------------------------------------------------ acting on real episodes

    @property
    def device(self) -> torch.device:
        return self.h0.device

    @torch.no_grad()
    def encode_mode(self, obs: dict) -> torch.Tensor:
        """One step's observations {key: [N, ...]} -> posterior mode z [N, Z] (acting is deterministic given obs)."""
        return mode_onehot(self.encode({k: obs[k][:, None] for k in self.obs_desc})).flatten(-2)[:, 0]

    def acting_state(self, n: int, window: int) -> dict:
        """An empty acting context for `n` real episodes that start now (see `observe_step`)."""
        if window < 2:
            raise UsageError(f"the acting window must hold at least 2 tokens, got {window}")
        return {"caches": LayerCaches.empty(len(self.core.blocks)), "h": self.h0.expand(n, -1), "z": None,
                "window": window, "tokens": []}      # tokens: the cached (z, a) pairs, position = index

    @torch.no_grad()
    def observe_step(self, state: dict, obs: dict, action=None) -> torch.Tensor:
        """One real env step for acting -> features [N, F] = [z_t, h_{t-1}]; `state` is updated in place.

        `action` is a_{t-1} (None at the episode's first step): the token (z_{t-1}, a_{t-1}) goes
        through the core as one cached step, then z_t = posterior mode of obs_t. Positions count
        from 0 as in a replay window; when `window` tokens are cached the cache restarts from the
        last window // 2 tokens (one core pass), so the context always holds window // 2 to
        `window` tokens and positions stay inside the trained range. `window_features` over
        `state["tokens"]` is the reference this is tested against.
        """
        if action is not None:
            self._push_token(state, action)
        state["z"] = self.encode_mode(obs)
        return self.features(state["z"], state["h"])

    def _push_token(self, state: dict, action) -> None:
        z, window = state["z"], state["window"]
        pos = len(state["tokens"])                     # the new token's position
        N = z.shape[0]
        if pos < window:                               # one cached step
            state["tokens"] = state["tokens"] + [(z, action)]
            x = self.token(z, action, torch.full((N,), pos, device=z.device, dtype=torch.long))[:, None]
            mask = torch.ones(N, 1, 1, pos + 1, dtype=torch.bool, device=z.device)
            state["h"] = self.core(x, attn_mask=mask, caches=state["caches"])[:, 0]
            return
        keep = (state["tokens"] + [(z, action)])[-(window // 2):]   # cache full: restart from the recent tokens
        zs, acts = torch.stack([t[0] for t in keep], 1), torch.stack([t[1] for t in keep], 1)
        caches = LayerCaches.empty(len(self.core.blocks))
        h = self.run_core(zs, acts, torch.zeros(zs.shape[:2], dtype=torch.bool, device=z.device), caches=caches)
        state.update(caches=caches, h=h[:, -1], tokens=keep)

    @staticmethod
    def select_rows(state: dict, idx: torch.Tensor) -> dict:
        """The acting state of rows `idx` only (episodes that ended drop out of a batch)."""
        pick = lambda x: None if x is None else x[idx]
        return dict(state, caches=state["caches"].index_select(idx), h=state["h"][idx], z=pick(state["z"]),
                    tokens=[(z[idx], a[idx]) for z, a in state["tokens"]])

    @torch.no_grad()
    def step(self, state: dict, action, heads: bool = True) -> dict:
        """One imagined env step from `state` with `action` [N]: one token through the cache.
        heads=False leaves out the reward and continue heads (`imagine` runs them once afterwards)."""
        return self._step(state, action, heads)

    def _step(self, state: dict, action, heads: bool = True) -> dict:
        z, caches, key_valid, pos = state["z"], state["caches"], state["key_valid"], state["pos"]
        N = z.shape[0]
        if pos >= self.cfg.max_seq_len:
            raise UsageError(f"imagination reached world.max_seq_len={self.cfg.max_seq_len} positions — "
                             "raise world.max_seq_len or shorten context + horizon")
        x = self.token(z, action, torch.full((N,), pos, device=z.device, dtype=torch.long))[:, None]
        key_valid = torch.cat([key_valid, torch.ones(N, 1, dtype=torch.bool, device=z.device)], 1)
        h = self.core(x, attn_mask=key_valid[:, None, None, :], caches=caches)[:, 0]
        return self._after_core(h, caches, key_valid, pos + 1, heads)

    def _after_core(self, h, caches, key_valid, pos, heads: bool = True):
        probs = unimix_probs(self._prior_logits(h), self.cfg.unimix)      # no log and exp back: no gradient here
        idx = sample_index(probs)                                         # [N, G]
        z_next = onehot_like(idx, probs).flatten(-2)
        out = {"z": z_next, "z_index": idx, "h": h, "caches": caches, "key_valid": key_valid, "pos": pos}
        if heads:
            out.update(self.heads(h))
        return out

    def heads(self, h: torch.Tensor) -> dict:
        """Core outputs h [..., H] -> predicted reward [...] and p(not terminated) `cont` [...]."""
        return {"reward": self.twohot.decode(self.reward_net(h)), "cont": torch.sigmoid(self.cont_net(h).squeeze(-1))}

    @staticmethod
    def branch(state: dict, group_size: int) -> dict:
        """Repeat a start state G times along the batch (row b -> rows b*G .. b*G+G-1)."""
        out = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                out[k] = v.repeat_interleave(group_size, 0)
            elif isinstance(v, LayerCaches):
                out[k] = v.repeat_interleave(group_size)
            elif isinstance(v, dict):
                out[k] = {kk: vv.repeat_interleave(group_size, 0) for kk, vv in v.items()}
            else:
                out[k] = v
        return out

    def imagine(self, state: dict, policy, horizon: int, group_size: int = 1, use_cache: bool = True,
                grad: bool = False) -> TensorDict:
        """Roll `policy` forward `horizon` steps from `state` -> TensorDict [N = B*G, horizon].

        Keys: feat (at t), action, logp, reward (after acting at t), cont (p(not terminated) after
        t), next_feat (at t+1), weight (prob. the episode is still running at t), z_index and
        next_z_index (the class indices [N, horizon, G] of feat's and next_feat's z).
        `policy(feat) -> torch.distributions.Distribution`; a policy with `reads_latent_index`
        set (the agents' Actor) is given the same features as `LatentFeatures(z index, h)`.
        use_cache=False recomputes the whole sequence every step (the reference the cache is
        tested and benchmarked against). grad=True keeps the graph, so the imagined rewards and
        states can be differentiated w.r.t. the policy's (reparameterised) actions — backprop
        through the dynamics; freeze the world model's parameters if only the policy should learn.
        """
        with torch.set_grad_enabled(grad):
            return self._imagine(state, policy, horizon, group_size, use_cache)

    def _imagine(self, state: dict, policy, horizon: int, group_size: int, use_cache: bool) -> TensorDict:
        if horizon <= 0:
            raise UsageError(f"horizon must be > 0, got {horizon}")
        if group_size <= 0:
            raise UsageError(f"group_size must be > 0, got {group_size}")
        if group_size > 1:
            state = self.branch(state, group_size)
        else:
            state = dict(state, caches=state["caches"].clone())
        z, h = state["z"], state["h"]
        idx = state["z_index"] if "z_index" in state else latent_index(z, self.cfg.latent_groups)
        by_index = getattr(policy, "reads_latent_index", False)
        N = z.shape[0]
        rows = []
        if not use_cache:
            ctx = state["context"]
            tok_z, tok_a, ep = ctx["z"][:, :-1], ctx["action"][:, :-1], ctx["ep"]
            last_ep = ep[:, -1:]
            ep_tokens = ep[:, :-1]
        for t in range(horizon):
            feat = self.features(z, h)
            dist = policy(LatentFeatures(idx, h) if by_index else feat)
            a = sample_action(dist)
            logp = dist.log_prob(a)
            a_env = self.in_box(a)                         # what the env would have executed
            if use_cache:
                nxt = self._step(state, a_env, heads=False)   # the heads run once on all steps below
            else:
                tok_z = torch.cat([tok_z, z[:, None]], 1)
                tok_a = torch.cat([tok_a, a_env[:, None]], 1)
                ep_tokens = torch.cat([ep_tokens, last_ep], 1)
                S = tok_z.shape[1]
                mask = (ep_tokens[:, :, None] == ep_tokens[:, None, :]).unsqueeze(1)
                pos = torch.arange(S, device=z.device).expand(N, S)
                h_all = self.core(self.token(tok_z, tok_a, pos), attn_mask=mask)
                nxt = self._after_core(h_all[:, -1], None, None, S, heads=False)
            rows.append({"feat": feat, "action": a, "logp": logp, "h_next": nxt["h"],
                         "next_feat": self.features(nxt["z"], nxt["h"]), "z_index": idx,
                         "next_z_index": nxt["z_index"]})
            z, h, idx, state = nxt["z"], nxt["h"], nxt["z_index"], nxt
        out = {k: torch.stack([r[k] for r in rows], 1) for k in rows[0]}
        out.update(self.heads(out.pop("h_next")))                     # reward, cont [N, horizon]
        cont = out["cont"]                                            # weight_t = prod_{s<t} cont_s
        out["weight"] = torch.cat([torch.ones_like(cont[:, :1]), cont[:, :-1].cumprod(1)], 1)
        return TensorDict(out, batch_size=[N, horizon])

    @torch.no_grad()
    def decode(self, z: torch.Tensor, h: torch.Tensor | None = None) -> dict:
        """Latent z [N, Z] (from a state or an imagined rollout) -> observations {key: [N, ...]}."""
        inp = z if not self.cfg.decoder_uses_h else torch.cat([z, h], -1)
        return {k: dec.to_obs(dec(inp)) for k, dec in self.decoders.items()}

    def spec_dict(self) -> dict:
        return {"obs": self.obs_desc, "action": self.act_desc}
