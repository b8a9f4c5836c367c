"""Typed configs: one dataclass per component, layered YAML files and dotted overrides.

    cfg = load_config(["configs/default.yaml", "configs/debug.yaml"], ["trainer.batch_size=8"])
    cfg.trainer.batch_size   # 8
    to_yaml(cfg)             # the fully resolved config; round-trips through from_dict()

Unknown keys and wrong types raise ConfigError naming the key and the nearest valid one.
YAML is read with yaml.safe_load only (python tags are refused).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .errors import QuatrixError


class ConfigError(QuatrixError, ValueError):
    """A user error in a config file or override; the message names the key and the fix."""


# ----------------------------------------------------------------------------- components

@dataclass
class QuatrixConfig:
    """The Quatrix model family (fields of the original quatrix package first)."""
    vocab_size: int = 50257
    hidden_size: int = 512
    num_layers: int = 7
    max_seq_len: int = 5120
    q_rank: int = 64
    use_vision: bool = False
    # additions (all defaulted so the original quick-start runs unchanged)
    num_heads: int = 1
    mixer: str = "qcompass"          # qcompass | mha  (the ablation switch)
    compressed: bool = False         # compressed-content Q-Compass: content = W_c(state*action)
    ffn_mult: int = 4
    dropout: float = 0.0
    bias: bool = False
    use_audio: bool = False
    # vision
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    vision_layers: int = 2
    vision_hidden_size: Optional[int] = None   # defaults to hidden_size
    # audio
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    audio_patch: int = 4             # mel frames per audio token
    audio_layers: int = 2
    max_audio_tokens: int = 512


@dataclass
class EncoderConfig:
    """Sizes of the per-key observation encoders inside the world model."""
    hidden_size: int = 64            # width of every encoder's output and of the vector MLPs
    q_rank: int = 16
    num_heads: int = 2
    image_layers: int = 1
    patch_size: int = 8
    text_layers: int = 1
    audio_layers: int = 1
    mlp_layers: int = 2
    image_loss: str = "mse"          # mse (summed squared error) | binary (images of 0/255 pixels such as
                                     # MinAtar's: class-balanced cross-entropy, see encoders.ImageDecoder)
    kinds: dict = field(default_factory=dict)   # override per key: {key: image|vector|tokens|audio}


@dataclass
class WorldConfig:
    latent_groups: int = 32
    latent_classes: int = 32
    unimix: float = 0.01
    hidden_size: int = 128           # dynamics core width
    num_layers: int = 2
    q_rank: int = 16
    num_heads: int = 2
    mixer: str = "qcompass"          # qcompass | mha
    compressed: bool = False
    dropout: float = 0.0
    max_seq_len: int = 256           # positions the core can see (context + imagination)
    reward_bins: int = 255
    free_bits: float = 1.0
    dyn_scale: float = 0.5
    rep_scale: float = 0.1
    recon_scale: float = 1.0
    decoder_uses_h: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


@dataclass
class EnvConfig:
    id: str = "MiniGrid-Empty-6x6-v0"
    full_view: bool = False
    max_episode_steps: Optional[int] = None
    options: dict = field(default_factory=dict)
    drop_keys: list = field(default_factory=list)    # observation keys the agent never sees (ablations)


@dataclass
class AgentConfig:
    kind: str = "actor_critic"       # actor_critic | grpo
    hidden_size: int = 256
    num_layers: int = 2
    lr: float = 3e-4
    critic_lr: float = 3e-4
    discount: float = 0.99
    lambda_: float = 0.95
    entropy: float = 3e-4            # the entropy bonus's scale (DreamerV3's); the floor of the adaptive one
    entropy_target: float = 0.3      # discrete actions: hold the policy's entropy above this fraction of
                                     # log(n_actions) by raising the scale (up to entropy_max_ratio x); 0 = fixed
    entropy_rate: float = 0.1        # per update: log(scale) += rate x (target - entropy), clamped
    entropy_max_ratio: float = 100.0
    actor_grad: str = "reinforce"    # reinforce | dynamics (actor_critic, continuous actions: the return's
                                     # gradient through the imagined dynamics, as DreamerV1-3 do) | auto
    critic_ema: float = 0.02
    horizon: int = 16
    context_len: int = 8
    starts: int = 64                 # imagination start states per update
    replay_critic: float = 0.0       # weight of a second critic loss on the replayed real rows' λ-returns
                                     # (DreamerV3's replay value loss, 0.3 there); 0 = imagination only
    grad_clip: float = 100.0
    # GRPO
    group_size: int = 8
    clip: float = 0.2
    epochs: int = 2
    kl_coef: float = 0.0
    bootstrap: bool = True
    grpo_entropy: float = 1e-3
    grpo_std_floor: float = 0.05     # group_std: added to the group std (differences below it are noise)
    grpo_advantage: str = "return_scale"  # return_scale: (R - mean) / max(1, P95 - P5 of the scores), no
                                     # per-group std | group_std: (R - mean) / (std + floor) (agents/grpo.py)
    grpo_critic_mix: float = 0.5     # share of each step's advantage from λ-return - critic value (0 = the group's alone)


@dataclass
class TrainerConfig:
    total_steps: int = 100_000
    prefill: int = 1000
    batch_size: int = 16
    seq_len: int = 32
    replay_capacity: int = 100_000
    replay_storage: str = "memory"   # memory | disk
    replay_ratio: float = 0.1        # gradient steps per env step
    reward_windows: float = 0.0      # share of each batch's windows drawn around a rewarded row (sparse rewards)
    random_actions: float = 0.0      # after the prefill: probability that a collected step acts at random
    world_lr: float = 1e-3           # 1e-4 learned the sparse MiniGrid reward far too slowly (measured)
    world_grad_clip: float = 100.0
    eval_every: int = 5000
    eval_episodes: int = 10
    eval_deterministic: bool = True  # also play eval_episodes with argmax actions (eval/return)
    eval_max_steps: int = 10_000     # step cap of an eval episode when the env has no time limit of its own
    target_return: Optional[float] = None   # stop once an evaluation reaches it (benchmarks)
    checkpoint_every: int = 5000
    log_every: int = 500
    video_every_eval: bool = True
    max_nonfinite_skips: int = 20
    progress: bool = True
    num_envs: int = 1                # env lanes stepped together (one batched policy call per vector step)
    parallel_envs: bool = False      # lanes in worker processes (torchrl ParallelEnv) instead of SerialEnv


@dataclass
class RunConfig:
    name: str = "{config}-{agent}-s{seed}"   # the run folder under `dir`; {config} {env} {agent} {seed} are filled in
    dir: str = "runs"
    device: str = "auto"             # auto (cuda when a GPU is visible) | cpu | cuda | cuda:N
    precision: str = "auto"          # auto (bf16 autocast on cuda, fp32 on cpu) | fp32 | bf16
    threads: int = 1                 # CPU threads while acting; 0 = torch default; small batches run fastest on one
    update_threads: int = 0          # CPU threads for gradient updates; 0 = every core
    compile: bool = False            # torch.compile the world-model and agent losses (inductor), forward and backward
    cudagraphs: bool = False         # with compile, on CUDA: capture them as CUDA graphs (mode reduce-overhead)


@dataclass
class Config:
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ----------------------------------------------------------------------------- checks

_POSITIVE = {
    "trainer.batch_size", "trainer.seq_len", "trainer.replay_capacity", "trainer.total_steps",
    "trainer.eval_episodes", "trainer.eval_every", "trainer.eval_max_steps", "trainer.num_envs", "trainer.checkpoint_every", "trainer.log_every",
    "agent.horizon", "agent.group_size", "agent.starts", "agent.context_len", "agent.epochs",
    "agent.hidden_size", "world.hidden_size", "world.num_layers", "world.q_rank", "world.num_heads",
    "world.latent_groups", "world.latent_classes", "world.max_seq_len", "world.reward_bins",
    "world.encoder.hidden_size", "world.encoder.patch_size", "world.encoder.q_rank",
    "world.encoder.num_heads",
    "trainer.replay_ratio", "trainer.world_lr", "agent.lr", "agent.critic_lr",
}
AGENT_KINDS = ("actor_critic", "grpo")
_CHOICES = {
    "agent.kind": AGENT_KINDS,
    "world.mixer": ("qcompass", "mha"),
    "trainer.replay_storage": ("memory", "disk"),
    "run.precision": ("auto", "fp32", "bf16"),
    "agent.actor_grad": ("reinforce", "dynamics", "auto"),
    "agent.grpo_advantage": ("group_std", "return_scale"),
    "world.encoder.image_loss": ("mse", "binary"),
}


RUN_NAME_FIELDS = ("config", "env", "agent", "seed")


def run_name(cfg: Config, config: str = "run") -> str:
    """`run.name` with its placeholders filled in: {config} (the last --config file's name, "run"
    when none), {env} (env.id, '/' and ':' made '-'), {agent} (agent.kind) and {seed}."""
    env = cfg.env.id.replace("/", "-").replace(":", "-")
    try:
        return cfg.run.name.format(config=config, env=env, agent=cfg.agent.kind, seed=cfg.seed)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"run.name {cfg.run.name!r} has an unknown placeholder ({e}) — use only "
                          f"{', '.join('{' + f + '}' for f in RUN_NAME_FIELDS)}, or a plain name") from None


def default_run_dir(cfg: Config, configs=()) -> str:
    """runs/<run.name>: the name's {config} is the last config file's name (without .yaml)."""
    names = [os.path.splitext(os.path.basename(c))[0] for c in configs if os.path.basename(c) != "default.yaml"]
    return os.path.join(cfg.run.dir, run_name(cfg, names[-1] if names else "run"))


def validate(cfg: Config) -> Config:
    flat = _flatten(to_dict(cfg))
    for key, v in flat.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key} must be a finite number, got {v!r} — set a number, e.g. --set {key}=1.0")
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be > 0, got {flat[key]!r} — set a positive value, e.g. --set {key}=1")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {flat[key]!r}")
    run_name(cfg)                        # its placeholders must be known ones
    dev = cfg.run.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"run.device must be auto, cpu, cuda or cuda:N; got {dev!r}")
    if cfg.run.cudagraphs and not cfg.run.compile:
        raise ConfigError("run.cudagraphs=true captures the compiled update as CUDA graphs — set run.compile=true "
                          "as well (and run on a GPU)")
    if not 0.0 <= cfg.trainer.random_actions < 1.0:
        raise ConfigError(f"trainer.random_actions is the probability of a random action while collecting, in "
                          f"[0, 1); got {cfg.trainer.random_actions!r} — e.g. --set trainer.random_actions=0.1")
    if not 0.0 <= cfg.agent.grpo_critic_mix <= 1.0:
        raise ConfigError(f"agent.grpo_critic_mix is the critic's share of GRPO's advantage, in [0, 1]; got "
                          f"{cfg.agent.grpo_critic_mix!r} — e.g. --set agent.grpo_critic_mix=0.5")
    if not 0.0 <= cfg.trainer.reward_windows <= 1.0:
        raise ConfigError(f"trainer.reward_windows is a share of each batch's windows, in [0, 1]; got "
                          f"{cfg.trainer.reward_windows!r} — e.g. --set trainer.reward_windows=0.25")
    for key in ("run.threads", "run.update_threads"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0 (0 = every core), got {flat[key]}")
    if cfg.trainer.prefill < cfg.trainer.seq_len:
        raise ConfigError(f"trainer.prefill ({cfg.trainer.prefill}) must be >= trainer.seq_len "
                          f"({cfg.trainer.seq_len}) so the first batch can be sampled")
    if cfg.trainer.replay_capacity < cfg.trainer.num_envs * cfg.trainer.seq_len:
        raise ConfigError(f"trainer.replay_capacity ({cfg.trainer.replay_capacity}) must hold trainer.seq_len "
                          f"({cfg.trainer.seq_len}) rows for each of trainer.num_envs ({cfg.trainer.num_envs}) lanes")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.agent.kind == "grpo" and cfg.agent.group_size < 2:
        raise ConfigError(f"agent.group_size must be >= 2 for GRPO (advantages are relative to the group), "
                          f"got {cfg.agent.group_size}")
    if cfg.agent.context_len + cfg.agent.horizon > cfg.trainer.seq_len:
        raise ConfigError(f"agent.context_len + agent.horizon ({cfg.agent.context_len}+{cfg.agent.horizon}) must be "
                          f"<= trainer.seq_len ({cfg.trainer.seq_len}): imagination would run on token positions "
                          "the world model never trained on — shorten the horizon or raise trainer.seq_len")
    a = cfg.agent
    if not (a.entropy >= 0 and a.grpo_entropy >= 0 and 0 <= a.entropy_target < 1 and a.entropy_rate >= 0
            and a.entropy_max_ratio >= 1):
        raise ConfigError("the entropy bonus needs agent.entropy >= 0, agent.grpo_entropy >= 0, 0 <= "
                          "agent.entropy_target < 1 (a fraction of log(n_actions); 0 = a fixed scale), "
                          f"agent.entropy_rate >= 0 and agent.entropy_max_ratio >= 1; got {a.entropy}, "
                          f"{a.grpo_entropy}, {a.entropy_target}, {a.entropy_rate}, {a.entropy_max_ratio}")
    if a.replay_critic < 0:
        raise ConfigError(f"agent.replay_critic must be >= 0 (0 = off), got {a.replay_critic}")
    if a.actor_grad == "dynamics" and a.kind != "actor_critic":
        raise ConfigError(f"agent.actor_grad=dynamics needs agent.kind=actor_critic (GRPO's clipped ratio loss is "
                          f"a REINFORCE-style gradient); got agent.kind={a.kind} — use agent.actor_grad=reinforce")
    if not 0.0 < cfg.agent.discount <= 1.0:
        raise ConfigError(f"agent.discount must be in (0, 1], got {cfg.agent.discount}")
    if cfg.agent.context_len + cfg.agent.horizon + 1 > cfg.world.max_seq_len:
        raise ConfigError("agent.context_len + agent.horizon must be < world.max_seq_len "
                          f"({cfg.agent.context_len}+{cfg.agent.horizon} vs {cfg.world.max_seq_len})")
    if cfg.trainer.seq_len > cfg.world.max_seq_len:
        raise ConfigError(f"trainer.seq_len ({cfg.trainer.seq_len}) must be <= world.max_seq_len "
                          f"({cfg.world.max_seq_len})")
    return cfg


# ----------------------------------------------------------------------------- dict <-> dataclass

def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("kinds", "options"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _all_keys(hints[f.name], key + ".")
    return keys


def _unknown(key: str) -> ConfigError:
    near = difflib.get_close_matches(key, _all_keys(Config), n=1, cutoff=0.6)
    hint = f" — did you mean '{near[0]}'?" if near else " — see configs/default.yaml for valid keys"
    return ConfigError(f"unknown key '{key}'{hint}")


def _coerce(key: str, value: Any, tp) -> Any:
    """Check `value` against the annotated type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)      # YAML 1.1 reads 3e-4 (no dot) as a string
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return int(value)    # 1e5 in YAML
    expected = {int: int, float: float, bool: bool, str: str, dict: dict, list: list}.get(tp, tp)
    if isinstance(expected, type):
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"wrong type for '{key}': expected {expected.__name__}, "
                              f"got {type(value).__name__} {value!r} — write it as {'an' if expected.__name__[0] in 'aeiou' else 'a'} {expected.__name__}")
    return value


def from_dict(data: dict, cls=Config, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise _unknown(prefix + str(k))
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = from_dict(v if v is not None else {}, tp, prefix + k + ".")
        else:
            kwargs[k] = _coerce(prefix + k, v, tp)
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("kinds", "options"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- files

def resolve_config_path(path: str) -> str:
    """A path as given, or the name of a config shipped with the package (e.g. 'debug.yaml')."""
    if os.path.isfile(path):
        return path
    import importlib.resources as res
    head, name = os.path.split(os.path.normpath(path))
    if head in ("", "configs"):           # 'debug.yaml' or 'configs/debug.yaml': the shipped file, from anywhere
        shipped = res.files("configs").joinpath(name)
        if shipped.is_file():
            return str(shipped)
    raise ConfigError(f"config file not found: '{path}' — pass an existing YAML file or one of "
                      f"{', '.join(sorted(list_shipped_configs()))}")


def list_shipped_configs() -> list[str]:
    import importlib.resources as res
    return [p.name for p in res.files("configs").iterdir() if p.name.endswith(".yaml")]


def read_yaml(path: str) -> dict:
    path = resolve_config_path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{path}: refused YAML tag ({e.problem}) — configs may hold plain values only") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: YAML syntax error ({getattr(e, 'problem', e)}) — fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value, e.g. trainer.batch_size=16")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_override(data: dict, key: str, value: Any) -> dict:
    parts = key.split(".")
    # validate the path against the schema so typos are caught even for unset sections
    cls = Config
    for i, p in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if p not in hints:
            raise _unknown(key)
        tp = hints[p]
        if i < len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                cls = tp
            elif tp is dict:
                break      # free-form dict (env.options, world.encoder.kinds)
            else:
                raise _unknown(key)
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{p}' is not a section")
    node[parts[-1]] = value
    return data


def load_config(paths: list | None = None, overrides: list[str] | None = None) -> Config:
    """Layers in order — each a YAML file (a path, or a shipped config's name) or a dict of the same
    nested shape — then "key=value" overrides.

    A layer may also hold a section per agent kind (`grpo:`, `actor_critic:`) of `agent` settings for
    that kind only: it is merged into `agent` right after its own layer when the run's final
    `agent.kind` (after every layer and override) is that kind. So one task config can tune both agents."""
    parsed = [parse_override(item) for item in overrides or []]
    layers = [copy.deepcopy(p) if isinstance(p, dict) else read_yaml(p) for p in paths or []]
    kind = AgentConfig.kind
    for layer in layers:
        if isinstance(layer.get("agent"), dict) and "kind" in layer["agent"]:
            kind = layer["agent"]["kind"]
    kind = next((v for k, v in reversed(parsed) if k == "agent.kind"), kind)
    data: dict = {}
    for layer in layers:
        sections = {k: layer.pop(k) for k in AGENT_KINDS if k in layer}
        for k, section in sections.items():
            if not isinstance(section, dict):
                raise ConfigError(f"'{k}' must be a mapping of agent settings for agent.kind={k} "
                                  f"(e.g. '{k}: {{starts: 16}}'), got {type(section).__name__}")
        data = _merge(data, layer)
        if kind in sections:
            data = _merge(data, {"agent": sections[kind]})
    for key, value in parsed:
        data = apply_override(data, key, value)
    return validate(from_dict(data))


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_from_yaml_text(text: str) -> Config:
    """The config saved in a checkpoint (a `model:` section of older checkpoints, never read, is dropped)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"the config saved in this checkpoint is not plain YAML ({problem}) — "
                          "only load checkpoints written by quatrix-world") from None
    if isinstance(data, dict):
        data.pop("model", None)
    return validate(from_dict(data))
