"""One encoder (and one decoder) per observation key, chosen from the key's spec.

    image  uint8 [H, W, C]  -> QuatrixVision patches -> flattened readout
    vector float [D]        -> symlog -> MLP
    tokens int64 [L]        -> QuatrixLM hidden states, mean-pooled over non-pad tokens
    audio  float [N]        -> QuatrixAudio (log-mel in pure torch) -> mean-pooled

An observation spec here is a plain dict {key: {"kind", "shape", "dtype", "vocab"}} so it can be
saved in a checkpoint as JSON; `describe_obs` builds it from a torchrl Composite spec.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import EncoderConfig, QuatrixConfig
from .errors import QuatrixError
from .latents import symlog

KINDS = ("image", "vector", "tokens", "audio")
ENCODER_NAMES = {"image": "QuatrixVision", "vector": "MLP", "tokens": "QuatrixLM", "audio": "QuatrixAudio"}


class SpecError(QuatrixError, ValueError):
    """Observation/action spec the world model cannot use, or a batch that does not match it."""


def infer_kind(key: str, shape, dtype: str) -> str:
    if "uint8" in dtype and len(shape) == 3:
        return "image"
    if "int" in dtype and len(shape) == 1:
        return "tokens"
    if "float" in dtype and len(shape) == 1:
        return "audio" if "audio" in key else "vector"
    raise SpecError(f"observation '{key}' with shape {list(shape)} and dtype {dtype} has no encoder — "
                    f"supported: uint8 images [H,W,C], float vectors [D], int token ids [L], audio [N]")


def describe_obs(obs_spec, kinds: dict | None = None) -> dict:
    """torchrl Composite (or an already plain dict) -> {key: {kind, shape, dtype, vocab}}."""
    kinds = kinds or {}
    if isinstance(obs_spec, dict) and all(isinstance(v, dict) and "shape" in v for v in obs_spec.values()):
        out = {k: dict(v) for k, v in obs_spec.items()}
    else:
        out = {}
        for key in obs_spec.keys():
            if not isinstance(key, str) or key in ("is_init", "done", "terminated", "truncated"):
                continue
            spec = obs_spec[key]
            dtype = str(spec.dtype).replace("torch.", "")
            vocab = None
            if "int" in dtype:
                if hasattr(spec, "space") and hasattr(spec.space, "n"):
                    vocab = int(spec.space.n)
                else:
                    vocab = int(spec.space.high.max().item()) + 1
            out[key] = {"shape": list(spec.shape), "dtype": dtype, "vocab": vocab}
    for key, d in out.items():
        d["kind"] = kinds.get(key) or d.get("kind") or infer_kind(key, d["shape"], d["dtype"])
        if d["kind"] not in KINDS:
            raise SpecError(f"world.encoder.kinds.{key}={d['kind']!r} is not a kind — use one of {', '.join(KINDS)}")
    if not out:
        raise SpecError("the environment has no observation keys the world model can read")
    return dict(sorted(out.items()))


def describe_action(action_spec) -> dict:
    if isinstance(action_spec, dict):
        return dict(action_spec)
    dtype = str(action_spec.dtype)
    if "int" in dtype or "bool" in dtype:
        n = int(action_spec.space.n) if hasattr(action_spec.space, "n") else int(action_spec.shape[-1])
        return {"kind": "discrete", "n": n}
    low = action_spec.space.low.reshape(-1).tolist()
    high = action_spec.space.high.reshape(-1).tolist()
    return {"kind": "continuous", "dim": int(action_spec.shape[-1]), "low": low, "high": high}


def mlp(inp: int, hidden: int, out: int, layers: int = 2) -> nn.Sequential:
    mods, d = [], inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


def distinct_rows(x: torch.Tensor):
    """[N, ...] -> (the distinct rows [M, ...], index [N] into them), or None when every row differs.

    A replay batch often shows the same frame or text many times (a mission is fixed for an
    episode; a grid world has few views), and an encoder's row is a function of that row alone:
    encoding each distinct row once and gathering gives the same values, and the same gradients
    up to float summation order. Rows are compared exactly, on their bytes read as wide integers."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[0] < 2 or torch.compiler.is_compiling():   # a compiled graph (run.compile) has fixed shapes
        return None
    wide = flat
    if not flat.is_floating_point():            # compare 8 (or 4, 2) bytes at a time
        for dtype in (torch.int64, torch.int32, torch.int16):
            if dtype.itemsize >= flat.element_size() and flat.shape[1] * flat.element_size() % dtype.itemsize == 0:
                wide = flat.view(dtype)
                break
    uniq, inverse = torch.unique(wide, dim=0, return_inverse=True)
    if uniq.shape[0] == flat.shape[0]:
        return None
    return uniq.view(x.dtype).reshape(-1, *x.shape[1:]), inverse


def image_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [-0.5, 0.5]."""
    return x.permute(0, 3, 1, 2).float() / 255.0 - 0.5


# ----------------------------------------------------------------------------- encoders

class ImageEncoder(nn.Module):
    def __init__(self, shape, cfg: EncoderConfig):
        super().__init__()
        from .vision import QuatrixVision
        H, W, C = shape
        p = cfg.patch_size
        if H < p or W < p or H % p or W % p:
            raise SpecError(f"image {H}x{W} does not tile into world.encoder.patch_size={p} patches — "
                            f"choose a patch size that divides both sides (e.g. {math.gcd(H, W)})")
        self.vision = QuatrixVision(QuatrixConfig(
            hidden_size=cfg.hidden_size, q_rank=cfg.q_rank, num_heads=cfg.num_heads, num_layers=1,
            vision_layers=cfg.image_layers, patch_size=p, image_size=H, in_channels=C, vocab_size=1,
            max_seq_len=(H // p) * (W // p)), out_dim=32)
        self.readout = nn.Sequential(nn.Linear((H // p) * (W // p) * 32, cfg.hidden_size),
                                     nn.LayerNorm(cfg.hidden_size), nn.SiLU())

    def forward(self, x):                       # [N, H, W, C] uint8 -> [N, E]
        rows = distinct_rows(x)                 # encode each distinct frame once (see distinct_rows)
        if rows is not None:
            return self.encode_frames(rows[0])[rows[1]]
        return self.encode_frames(x)

    def encode_frames(self, x):                 # [N, H, W, C] uint8 -> [N, E], every frame encoded
        tokens = self.vision(image_to_float(x))  # [N, P, 32]
        return self.readout(tokens.flatten(1))


class VectorEncoder(nn.Module):
    def __init__(self, shape, cfg: EncoderConfig):
        super().__init__()
        self.net = mlp(shape[0], cfg.hidden_size, cfg.hidden_size, cfg.mlp_layers)

    def forward(self, x):
        return self.net(symlog(x.float()))


class TokenEncoder(nn.Module):
    def __init__(self, shape, vocab: int, cfg: EncoderConfig):
        super().__init__()
        from .lm import QuatrixLM
        self.lm = QuatrixLM(QuatrixConfig(vocab_size=vocab, hidden_size=cfg.hidden_size, q_rank=cfg.q_rank,
                                          num_heads=cfg.num_heads, num_layers=cfg.text_layers,
                                          max_seq_len=shape[0]))

    def forward(self, ids):                     # [N, L] int64, 0 = pad
        rows = distinct_rows(ids.long())        # a batch holds few distinct texts (see distinct_rows)
        if rows is not None:
            return self.encode_rows(rows[0])[rows[1]]
        return self.encode_rows(ids.long())

    def encode_rows(self, ids):                 # [N, L] -> [N, E]: mean of hidden states over non-pad tokens
        hidden = self.lm(ids)["hidden_states"]                   # [N, L, E]
        keep = (ids != 0).unsqueeze(-1).float()
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


class AudioEncoder(nn.Module):
    def __init__(self, shape, cfg: EncoderConfig, sample_rate: int = 16000):
        super().__init__()
        from .audio import QuatrixAudio
        n = shape[0]
        n_fft = min(256, 2 ** int(math.log2(max(16, n // 4))))
        self.audio = QuatrixAudio(QuatrixConfig(
            hidden_size=cfg.hidden_size, q_rank=cfg.q_rank, num_heads=cfg.num_heads, num_layers=1,
            audio_layers=cfg.audio_layers, sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 2,
            n_mels=32, audio_patch=2, vocab_size=1, max_seq_len=512))

    def forward(self, x):
        return self.audio.pool(x.float())


def build_encoder(desc: dict, cfg: EncoderConfig) -> nn.Module:
    kind, shape = desc["kind"], desc["shape"]
    if kind == "image":
        return ImageEncoder(shape, cfg)
    if kind == "vector":
        return VectorEncoder(shape, cfg)
    if kind == "tokens":
        return TokenEncoder(shape, desc.get("vocab") or 256, cfg)
    return AudioEncoder(shape, cfg, desc.get("sample_rate", 16000))


# ----------------------------------------------------------------------------- decoders

class PatchSquaredError(torch.autograd.Function):
    """sse[n] = sum((x[n] @ W.T + b - (target[n] / 255 - 0.5)) ** 2) for x [N, P, D], W [K, D], b [K],
    target uint8 [N, P, K]: one image-sized float buffer, filled with the target, turned into the
    difference in place (addmm_) and, in backward, into the gradient in place."""

    @staticmethod
    def forward(ctx, x, weight, bias, target):
        N, P, D = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            x2, weight = x.reshape(N * P, D).float(), weight.float()
            diff = target.to(torch.float32, copy=True)                                  # never the caller's tensor
            diff = diff.view(N * P, -1).mul_(-1.0 / 255.0).add_(bias.float() + 0.5)     # b - target
            diff.addmm_(x2, weight.t())                                                 # prediction - target
            flat = diff.view(N, 1, -1)
            sse = torch.bmm(flat, flat.transpose(1, 2)).view(N)
        ctx.save_for_backward(x2, weight, diff)
        ctx.shape, ctx.used = (N, P, D), False
        return sse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.used:
            raise RuntimeError("PatchSquaredError's backward reuses its buffer and runs once per forward")
        ctx.used = True
        x2, weight, diff = ctx.saved_tensors
        N, P, D = ctx.shape
        g = diff.view(N, -1).mul_(2.0 * grad.float()[:, None]).view(N * P, -1)          # [N*P, K], in place
        gx = (g @ weight).view(N, P, D) if ctx.needs_input_grad[0] else None
        gw = g.t() @ x2 if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class ImageDecoder(nn.Module):
    """Latent -> per-patch linear decoding -> image, with one of two losses (`image_loss`):

    - mse: the output is the image in [-0.5, 0.5]; loss = sum of squared errors per image.
    - binary, for images whose pixels are 0 or 255 (MinAtar's object channels): the output is one
      logit per pixel; loss = sum of binary cross-entropies per image, each channel's lit pixels
      weighted by (1 - p) / p (p: that channel's lit fraction in the batch; the weight at most
      BALANCE_CAP), so a channel's few lit pixels weigh as much as its dark ones. Under squared error
      a one-pixel object (a ball, a paddle) in a 10x10 frame costs at most 1 per frame whether the
      latent holds it or not, and the world model learns the frame's static part only: on MinAtar
      Breakout (random play) it reconstructed none of the paddle, ball and trail pixels after 2,000
      updates; with this loss, after 1,000 it lit every one of them, with 87-92% of the pixels it
      lit right (docs/BENCHMARKS.md §15). Decoded frames show a pixel lit where its logit is
      positive (the balanced decision).
    """
    BALANCE_CAP = 100.0

    def __init__(self, inp: int, shape, cfg: EncoderConfig):
        super().__init__()
        H, W, C = shape
        self.shape, self.p = (H, W, C), cfg.patch_size
        self.binary = cfg.image_loss == "binary"
        self.grid = (H // self.p, W // self.p)
        n = self.grid[0] * self.grid[1]
        self.net = nn.Sequential(nn.Linear(inp, cfg.hidden_size * 2), nn.LayerNorm(cfg.hidden_size * 2),
                                 nn.SiLU(), nn.Linear(cfg.hidden_size * 2, n * 32), nn.SiLU())
        self.pos = nn.Parameter(torch.zeros(n, 32))
        self.patch = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, self.p * self.p * C))

    def patches(self, z):                       # [N, inp] -> [N, gh*gw, p*p*C]
        x = self.net(z).reshape(-1, self.grid[0] * self.grid[1], 32) + self.pos
        return self.patch(x)

    def forward(self, z):                       # [N, inp] -> [N, H, W, C]: pixels in [-0.5, 0.5] (mse), logits (binary)
        H, W, C = self.shape
        gh, gw = self.grid
        x = self.patches(z).reshape(-1, gh, gw, self.p, self.p, C)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)

    def loss(self, z, target):
        """The loss per image [N], computed in patch layout: the (gradient-free) target is cut into
        patches instead of the prediction being pasted into an image. For mse, this path never holds
        the prediction, the difference and its square as separate image-sized tensors (they dominate
        the update); `reference_loss` is the same math in plain autograd."""
        if self.binary:
            return self.reference_loss(z, target)
        hidden = self.patch[:-1](self.net(z).reshape(-1, self.grid[0] * self.grid[1], 32) + self.pos)  # [N, P, 64]
        last = self.patch[-1]
        return PatchSquaredError.apply(hidden, last.weight, last.bias, self.target_patches(target))

    def reference_loss(self, z, target):
        t = self.target_patches(target).float() / 255.0                 # [N, P, p*p*C] in [0, 1]
        if self.binary:
            return F.binary_cross_entropy_with_logits(self.patches(z), t, pos_weight=self.lit_weight(t),
                                                      reduction="none").flatten(1).sum(-1)
        return (self.patches(z) - (t - 0.5)).pow(2).flatten(1).sum(-1)

    def lit_weight(self, t):                    # [N, P, p*p*C] targets -> [p*p*C]: (1 - p) / p per channel
        C = self.shape[2]
        lit = t.reshape(-1, C).mean(0).clamp(min=1.0 / self.BALANCE_CAP)  # channel is the last, fastest dim
        return ((1 - lit) / lit).clamp(min=1.0, max=self.BALANCE_CAP).repeat(self.p * self.p)

    def target_patches(self, target):           # [N, H, W, C] uint8 -> [N, gh*gw, p*p*C] uint8, patch layout
        C = self.shape[2]
        gh, gw = self.grid
        t = target.reshape(-1, gh, self.p, gw, self.p, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(-1, gh * gw, self.p * self.p * C)

    def to_obs(self, out):                      # mse: the mean image; binary: lit where the logit is > 0
        if self.binary:
            return (out > 0).to(torch.uint8) * 255
        return ((out + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


class VectorDecoder(nn.Module):
    def __init__(self, inp: int, shape, cfg: EncoderConfig):
        super().__init__()
        self.net = mlp(inp, cfg.hidden_size, shape[0], cfg.mlp_layers)

    def forward(self, z):
        return self.net(z)

    def loss(self, z, target):
        return (self(z) - symlog(target.float())).pow(2).sum(-1)

    def to_obs(self, out):
        from .latents import symexp
        return symexp(out)


class TokenDecoder(nn.Module):
    def __init__(self, inp: int, shape, vocab: int, cfg: EncoderConfig):
        super().__init__()
        self.L, self.V = shape[0], vocab
        self.net = mlp(inp, cfg.hidden_size, self.L * vocab, 1)

    def forward(self, z):
        return self.net(z).reshape(-1, self.L, self.V)

    def loss(self, z, target):
        logits = self(z)
        return F.cross_entropy(logits.transpose(1, 2), target.long(), reduction="none").sum(-1)

    def to_obs(self, out):
        return out.argmax(-1)


class AudioDecoder(nn.Module):
    """Reconstructs the log-mel spectrogram the encoder reads (a waveform target is not learnable)."""

    def __init__(self, inp: int, encoder: AudioEncoder, shape, cfg: EncoderConfig):
        super().__init__()
        self.encoder_audio = [encoder.audio]    # list: do not register the encoder twice
        with torch.no_grad():
            mel = self._mel(torch.zeros(1, shape[0]))
        self.mel_shape = tuple(mel.shape[1:])
        self.net = mlp(inp, cfg.hidden_size, mel[0].numel(), 1)

    def _mel(self, wave):
        from .audio import log_mel_spectrogram
        a = self.encoder_audio[0].config
        return log_mel_spectrogram(wave.float(), a.sample_rate, a.n_fft, a.hop_length, a.n_mels)

    def forward(self, z):
        return self.net(z).reshape(-1, *self.mel_shape)

    def loss(self, z, target):
        with torch.no_grad():
            mel = self._mel(target)
        return (self(z) - mel).pow(2).flatten(1).mean(-1) * 10.0

    def to_obs(self, out):
        return out


def build_decoder(inp: int, desc: dict, cfg: EncoderConfig, encoder: nn.Module) -> nn.Module:
    kind, shape = desc["kind"], desc["shape"]
    if kind == "image":
        return ImageDecoder(inp, shape, cfg)
    if kind == "vector":
        return VectorDecoder(inp, shape, cfg)
    if kind == "tokens":
        return TokenDecoder(inp, shape, desc.get("vocab") or 256, cfg)
    return AudioDecoder(inp, encoder, shape, cfg)
