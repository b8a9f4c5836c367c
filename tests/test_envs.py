"""make_env / check_env / Tokenizer / example envs: the data contract and every user error."""
import os
import sys

import gymnasium as gym
import numpy as np
from gymnasium import spaces
import pytest
import torch
from torchrl.envs.utils import step_mdp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import envs  # noqa: E402
from envs import EnvError, Tokenizer, check_env, format_report, make_env  # noqa: E402
from test_envs_helpers import Corridor  # noqa: E402

FLAGS = ("terminated", "truncated", "done")


def assert_contract(env, td, n):
    """Keys, shapes and dtypes of a rollout of length n follow DESIGN.md's data contract."""
    info = env.quatrix_info
    assert td.batch_size == (n,)
    assert td["is_init"].shape == (n, 1) and td["is_init"].dtype == torch.bool
    assert td["is_init"][0].item() and not td["is_init"][1:].any()
    for k in FLAGS:
        assert td["next", k].shape == (n, 1) and td["next", k].dtype == torch.bool
    assert td["next", "reward"].shape == (n, 1) and td["next", "reward"].dtype == torch.float32
    for key, kind in info["obs_kinds"].items():
        x, nx = td[key], td["next", key]
        assert x.shape == nx.shape and x.dtype == nx.dtype
        dtype = {"image": torch.uint8, "tokens": torch.int64}.get(kind, torch.float32)
        assert x.dtype == dtype, (key, x.dtype)
        assert x.dim() == (4 if kind == "image" else 2)
        assert env.observation_spec[key].shape == x.shape[1:]
    # alignment: row t's next observation is row t+1's observation (within one episode)
    for key in info["obs_kinds"]:
        assert torch.equal(td["next", key][:-1], td[key][1:])
    if info["action_kind"] == "discrete":
        assert td["action"].shape == (n,) and td["action"].dtype == torch.int64
    else:
        assert td["action"].shape == (n, info["action_dim"]) and td["action"].dtype == torch.float32


def test_cartpole_rollout_contract():
    env = make_env("CartPole-v1", seed=0)
    td = env.rollout(5)
    assert_contract(env, td, 5)
    assert td["observation"].shape == (5, 4)
    info = env.quatrix_info
    assert info["obs_kinds"] == {"observation": "vector"} and info["action_kind"] == "discrete"
    assert info["num_actions"] == 2 and info["spec_str"] == "CartPole-v1" and info["max_episode_steps"] == 500
    assert env.action_spec.space.n == 2


def test_pendulum_box_action():
    env = make_env("Pendulum-v1", seed=0, max_episode_steps=7)
    td = env.rollout(20, break_when_any_done=False)
    assert_contract(env, td[:5], 5)
    assert env.quatrix_info["action_dim"] == 1 and env.quatrix_info["max_episode_steps"] == 7
    assert float(env.action_spec.space.high) == 2.0
    # the time limit truncates (not terminates) at step 7, then torchrl resets
    assert td["next", "truncated"][6].item() and not td["next", "terminated"].any()
    assert td["is_init"][7].item()


def test_minigrid_pixels_and_mission():
    env = make_env("MiniGrid-Empty-6x6-v0", seed=0)
    td = env.rollout(4)
    assert_contract(env, td, len(td))
    assert td["image"].shape[1:] == (56, 56, 3) and td["image"].dtype == torch.uint8
    assert td["mission"].shape[1:] == (16,)
    assert env.quatrix_info["obs_kinds"] == {"image": "image", "mission": "tokens"}
    assert env.tokenizer.decode(td["mission"][0]) == "get to the green goal square"
    spec = env.observation_spec["mission"]
    assert int(spec.space.high.max()) + 1 == Tokenizer().vocab_size
    assert "direction" not in td.keys()
    full = make_env("MiniGrid-Empty-6x6-v0", seed=0, full_view=True, tile_size=4)
    assert full.reset()["image"].shape == (24, 24, 3)
    assert envs.render_frame(env).shape[-1] == 3
    assert env.quatrix_info["max_episode_steps"] == 4 * 6 * 6       # MiniGrid's own limit


def test_render_frame():
    env = make_env("QuatrixWorld/ListenCorridor-v0", seed=0)
    env.reset()
    frame = env.render_frame()
    assert frame.dtype == np.uint8 and frame.shape == (8, 56, 3)
    env = make_env("test_envs_helpers:ChannelsFirst", seed=0)    # no render(): falls back to pixels
    env.reset()
    assert envs.render_frame(env).shape == (8, 10, 3)
    env = make_env("test_envs_helpers:Corridor", seed=0)
    env.reset()
    with pytest.raises(EnvError, match="cannot render"):
        env.render_frame()


def test_minigrid_mission_changes_per_episode():
    env = make_env("MiniGrid-GoToDoor-5x5-v0")
    missions = set()
    for s in range(20):
        env.set_seed(s)
        missions.add(env.tokenizer.decode(env.reset()["mission"]))
    assert len(missions) >= 2
    assert all(m.startswith("go to the") and m.endswith("door") and "<unk>" not in m for m in missions)


def test_seeding_is_reproducible():
    a = make_env("MiniGrid-GoToDoor-5x5-v0", seed=3).reset()
    b = make_env("MiniGrid-GoToDoor-5x5-v0", seed=3).reset()
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mission"], b["mission"])
    env = make_env("test_envs_helpers:Corridor")
    env.set_seed(5)
    x = env.reset()["observation"]
    env.set_seed(5)
    assert torch.equal(env.reset()["observation"], x)


def test_custom_specs_module_instance_class():
    for spec in ("test_envs_helpers:Corridor", "test_envs_helpers:make_corridor", Corridor(), Corridor):
        env = make_env(spec, seed=0, max_episode_steps=50)
        td = env.rollout(3)
        assert_contract(env, td, 3)
        assert env.quatrix_info["obs_kinds"] == {"observation": "vector"}
    assert make_env("test_envs_helpers:Corridor", length=9).gym_env.unwrapped.length == 9


def test_dict_space_conversions():
    env = make_env("test_envs_helpers:ChannelsFirst", seed=0)
    td = env.reset()
    assert td["cam"].shape == (8, 10, 3) and td["cam"].dtype == torch.uint8     # CxHxW -> HxWxC
    # two vector keys keep their own names; Discrete -> one-hot, MultiBinary -> float
    assert env.quatrix_info["obs_kinds"] == {"cam": "image", "pos": "vector", "flags": "vector"}
    assert td["pos"].tolist() == [1, 0, 0, 0, 0] and td["flags"].tolist() == [1.0, 0.0, 1.0]


def test_listen_corridor_audio_cues_goal():
    env = make_env("QuatrixWorld/ListenCorridor-v0")
    assert env.quatrix_info["obs_kinds"] == {"audio": "audio", "observation": "vector"}
    spectra = {}
    for s in range(12):
        env.set_seed(s)
        td = env.reset()
        assert td["audio"].shape == (1024,) and td["audio"].dtype == torch.float32
        goal = env.gym_env.unwrapped.goal
        spectra.setdefault(goal, torch.fft.rfft(td["audio"]).abs().argmax().item())
        # walking toward the goal pays 1, the wrong way pays 0
        ret, done, a = 0.0, False, torch.tensor(goal)
        while not done:
            td["action"] = a
            td = env.step(td)
            ret += td["next", "reward"].item()
            done = td["next", "done"].item()
            td = step_mdp(td)
        assert ret == 1.0
    assert len(spectra) == 2 and spectra[0] < spectra[1]   # low tone = left, high tone = right
    td = env.rollout(30, break_when_any_done=False)
    assert_contract(env, td[:1], 1)


def test_say_color_text_instruction():
    env = make_env("QuatrixWorld/SayColor-v0")
    seen = set()
    for s in range(10):
        env.set_seed(s)
        td = env.reset()
        text = env.tokenizer.decode(td["mission"])
        seen.add(text)
        color = text.split()[3]
        td["action"] = torch.tensor(env.gym_env.unwrapped.COLORS.index(color))
        assert env.step(td)["next", "reward"].item() == 1.0
    assert len(seen) >= 2


def test_num_envs_serial():
    env = make_env("CartPole-v1", seed=0, num_envs=2)
    td = env.rollout(3)
    assert td.batch_size == (2, 3) and td["observation"].shape == (2, 3, 4)
    assert td["is_init"][:, 0].all() and env.quatrix_info["num_envs"] == 2
    env.close()


def test_check_env_report():
    rep = check_env("MiniGrid-Empty-6x6-v0")
    assert rep["ok"] and rep["keys"]["image"] == {**rep["keys"]["image"], "shape": [56, 56, 3], "dtype": "uint8",
                                                   "kind": "image"}
    assert rep["keys"]["mission"]["kind"] == "tokens" and rep["action"] == {"kind": "discrete", "num_actions": 7}
    text = format_report(rep)
    assert "QuatrixVision" in text and "QuatrixLM" in text and "discrete" in text
    text = format_report(check_env("QuatrixWorld/ListenCorridor-v0"))
    assert "QuatrixAudio" in text and "MLP" in text
    rep = check_env("Pendulum-v1")
    assert rep["action"]["kind"] == "continuous" and "continuous" in format_report(rep)


# ----------------------------------------------------------------------------- errors

def one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_id_suggests():
    with pytest.raises(EnvError) as e:
        make_env("CartPol-v1")
    assert "did you mean 'CartPole-v1'" in one_line(e)
    with pytest.raises(EnvError) as e:
        make_env("MiniGrid-Empty-6x7-v0")
    assert "MiniGrid-Empty-" in one_line(e)


def test_import_errors():
    with pytest.raises(EnvError) as e:
        make_env("no_such_pkg.envs:Thing")
    assert "cannot import module 'no_such_pkg.envs'" in one_line(e) and "No module named" in str(e.value)
    with pytest.raises(EnvError) as e:
        make_env("test_envs_helpers:Coridor")
    assert "did you mean 'Corridor'" in one_line(e)
    with pytest.raises(EnvError, match="not a gymnasium.Env"):
        make_env("test_envs_helpers:NOT_AN_ENV")
    with pytest.raises(EnvError, match="cannot make an env from"):
        make_env(3.5)


@pytest.mark.parametrize("name,match", [
    ("MultiDiscreteAction", "action space MultiDiscrete .* not supported — supported: Discrete"),
    ("TupleObs", "observation space Tuple is not supported"),
    ("WrongShape", "does not match its space: expected shape \\(3,\\).*got shape \\(5,\\)"),
    ("FloatImage", "expected dtype uint8"),
    ("BadReset", "reset\\(\\) must return \\(obs, info\\); got ndarray"),
    ("BadStep", "step\\(\\) must return .*got a 4-tuple"),
])
def test_bad_envs(name, match):
    with pytest.raises(EnvError, match=match) as e:
        make_env(f"test_envs_helpers:{name}").rollout(3)
    one_line(e)
    with pytest.raises(EnvError, match=match):
        check_env(f"test_envs_helpers:{name}")


def test_nan_reward():
    env = make_env("test_envs_helpers:NaNReward", seed=0)
    td = env.reset()
    with pytest.raises(EnvError, match="non-finite reward nan at step 2") as e:
        for _ in range(5):
            td["action"] = torch.tensor(0)
            td = step_mdp(env.step(td))
    assert "clip_nonfinite_reward=True" in one_line(e)
    env = make_env("test_envs_helpers:NaNReward", seed=0, clip_nonfinite_reward=True)
    td = env.rollout(5, policy=lambda td: td.set("action", torch.tensor(0)))
    assert torch.isfinite(td["next", "reward"]).all()
    with pytest.raises(EnvError, match="non-finite reward"):
        check_env("test_envs_helpers:NaNReward")


def test_check_env_catches_unseeded_env():
    with pytest.raises(EnvError, match="not reproducible"):
        check_env("test_envs_helpers:Unseeded")


def test_bad_options():
    with pytest.raises(EnvError, match="only apply to MiniGrid"):
        make_env("CartPole-v1", full_view=True)
    with pytest.raises(EnvError, match="num_envs"):
        make_env("CartPole-v1", num_envs=0)
    with pytest.raises(EnvError, match="could not construct"):
        make_env("test_envs_helpers:Corridor", colour="red")


# ----------------------------------------------------------------------------- tokenizer

def test_tokenizer():
    tok = Tokenizer()
    ids = tok.encode("Go to the RED door, then pick up the blue key")
    assert ids.shape == (16,) and ids.dtype == torch.int64
    assert tok.decode(ids) == "go to the red door, then pick up the blue key"
    assert tok.encode("zebra")[0].item() == tok.unk_id and tok.encode("")[0].item() == tok.pad_id
    assert tok.encode(" ".join(["ball"] * 40)).shape == (16,)
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.vocab_size == tok.vocab_size and torch.equal(again.encode("open the door"), tok.encode("open the door"))


def test_tokenizer_covers_minigrid_missions():
    """Every word of every mission of a sample of MiniGrid/BabyAI envs is in the fixed vocabulary."""
    import gymnasium as gym
    tok = Tokenizer()
    ids = ["MiniGrid-Fetch-5x5-N2-v0", "MiniGrid-PutNear-6x6-N2-v0", "MiniGrid-LockedRoom-v0",
           "MiniGrid-KeyCorridorS3R1-v0", "MiniGrid-DoorKey-5x5-v0", "MiniGrid-LavaGapS5-v0",
           "MiniGrid-ObstructedMaze-1Dl-v0", "MiniGrid-RedBlueDoors-6x6-v0", "MiniGrid-MemoryS7-v0",
           "MiniGrid-MultiRoom-N2-S4-v0", "MiniGrid-UnlockPickup-v0", "BabyAI-GoToLocal-v0",
           "BabyAI-PutNextLocal-v0", "BabyAI-Open-v0", "BabyAI-Pickup-v0"]
    for env_id in ids:
        env = gym.make(env_id)
        for s in range(5):
            mission = env.reset(seed=s)[0]["mission"]
            words = tok.split(mission)
            unknown = [w for w in words if w not in tok.stoi]
            assert not unknown, (env_id, mission)
        env.close()


def test_nan_observation_is_refused_with_its_key():
    env = make_env("test_envs_helpers:NaNObs", seed=0)
    td = env.reset()
    td["action"] = torch.tensor(1)
    with pytest.raises(EnvError, match=r"holds a non-finite value \(nan at index \(2,\)\)"):
        env.step(td)
    with pytest.raises(EnvError, match="non-finite value"):
        check_env("test_envs_helpers:NaNObs")


def test_unbounded_action_box_is_refused():
    with pytest.raises(EnvError, match="is unbounded .*RescaleAction"):
        make_env("test_envs_helpers:UnboundedAction", seed=0)
    with pytest.raises(EnvError, match="is unbounded"):
        check_env("test_envs_helpers:UnboundedAction")


def test_atari_family_runs_the_100k_protocol():
    pytest.importorskip("ale_py")
    from envs.families import AtariFrames, family_of
    env = make_env("ALE/Pong-v5", seed=3)
    td = env.reset()
    assert td["pixels"].shape == (64, 64, 3) and td["pixels"].dtype == torch.uint8
    assert env.action_spec.n == 6                                   # the minimal action set
    gym_env = env.gym_env
    while not isinstance(gym_env, AtariFrames):
        gym_env = gym_env.env
    assert gym_env.frame_skip == 4 and not gym_env.life_loss
    ale = gym_env.env.unwrapped
    assert ale._frameskip == 1                                      # the wrapper skips, with max-pooling
    assert float(ale.ale.getFloat("repeat_action_probability")) == pytest.approx(0.25)
    assert int(ale.ale.getInt("max_num_frames_per_episode")) == 108_000
    again = make_env("ALE/Pong-v5", seed=3).reset()
    assert torch.equal(td["pixels"], again["pixels"])               # reproducible given the seed
    td["action"] = torch.tensor(2)
    out = env.step(td)["next"]
    assert out["pixels"].shape == (64, 64, 3)
    assert make_env("ALE/Pong-v5", seed=0, life_loss=True, screen_size=32).reset()["pixels"].shape == (32, 32, 3)
    with pytest.raises(EnvError, match="only apply to Atari envs"):
        make_env("CartPole-v1", life_loss=True)
    fam = family_of("ALE/Breakout-v5")
    missing = type(fam)("Atari", ("NoSuchSuite/",), fam.options, fam.wrap, requires=("no_such_ale_module", "atari"))
    with pytest.raises(EnvError, match=r'need the .no_such_ale_module. package — pip install -e "\.\[atari\]"'):
        missing.register()


def test_object_channel_images_and_their_colours():
    """Any channel count below the image sides is an image (MinAtar's 10x10xC); videos colour it."""
    from envs.video import PALETTE, _frames_array, channels_to_rgb
    env = make_env("test_envs_helpers:ObjectChannels", seed=0)
    assert env.quatrix_info["obs_kinds"] == {"pixels": "image"}
    assert env.reset()["pixels"].shape == (10, 10, 7)
    x = np.zeros((10, 10, 7), np.uint8)
    x[1, 2, 3] = 255
    x[4, 5, [0, 6]] = 255                                         # two objects: the last channel wins
    rgb = channels_to_rgb(x)
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
    assert (rgb[1, 2] == PALETTE[3]).all() and (rgb[4, 5] == PALETTE[6]).all() and (rgb[0, 0] == 0).all()
    assert _frames_array([x])[0].shape == (10, 10, 3)


def test_minatar_family():
    pytest.importorskip("minatar")
    env = make_env("MinAtar/Freeway-v1", seed=1)
    td = env.reset()
    assert td["pixels"].shape == (10, 10, 7) and td["pixels"].dtype == torch.uint8
    assert set(td["pixels"].unique().tolist()) <= {0, 255}
    assert torch.equal(td["pixels"], make_env("MinAtar/Freeway-v1", seed=1).reset()["pixels"])
    assert "OK" in format_report(check_env("MinAtar/Breakout-v1"))


def test_audio_sample_rate_comes_from_the_env():
    """ListenCorridor speaks at 8 kHz: the audio encoder's mel filters are built for 8 kHz, not 16."""
    from agents.collect import build_env, env_specs
    from quatrix_world.config import load_config
    from quatrix_world.world import QuatrixWorld
    cfg = load_config(["default.yaml", "debug.yaml"], ["env.id=QuatrixWorld/ListenCorridor-v0"])
    obs, act = env_specs(build_env(cfg, 0))
    assert obs["audio"]["sample_rate"] == 8000
    world = QuatrixWorld(cfg.world, obs, act)
    assert world.encoders["audio"].audio.config.sample_rate == 8000


class CameraSpeed(gym.Env):
    """A Dict observation with the user's own key names (one image, one vector)."""

    def __init__(self, render_mode=None):
        self.observation_space = spaces.Dict({"camera": spaces.Box(0, 255, (16, 16, 3), np.uint8),
                                              "speed": spaces.Box(-1.0, 1.0, (3,), np.float32)})
        self.action_space = spaces.Discrete(2)

    def _obs(self):
        return {"camera": np.full((16, 16, 3), 10 * self.t, np.uint8), "speed": np.full(3, 0.1 * self.t, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), self.t >= 5, False, {}


def test_a_dict_keeps_its_keys_everywhere():
    """The user's Dict keys, not renamed: in the env, the replay, the world model's losses and the
    encoder overrides; a lone Box is still `observation`."""
    from envs import EpisodeReplay
    from quatrix_world.config import WorldConfig
    from quatrix_world.world import QuatrixWorld
    from agents.collect import env_specs
    env = make_env(CameraSpeed, seed=0)
    assert env.quatrix_info["obs_kinds"] == {"camera": "image", "speed": "vector"}
    td = env.rollout(12, break_when_any_done=False)
    assert td["camera"].shape == (12, 16, 16, 3) and td["speed"].shape == (12, 3)
    replay = EpisodeReplay(50, 6, 2, seed=0)
    replay.extend(td)
    batch = replay.sample()
    assert {"camera", "speed"} <= set(batch.keys()) and "pixels" not in batch.keys()
    obs, act = env_specs(env)
    cfg = WorldConfig(hidden_size=32, num_layers=1, latent_groups=4, latent_classes=4, max_seq_len=16)
    cfg.encoder.hidden_size, cfg.encoder.patch_size = 16, 8
    cfg.encoder.kinds = {"speed": "vector"}             # an override names the user's key
    world = QuatrixWorld(cfg, obs, act)
    _, metrics, _ = world.loss(batch)
    assert {"loss/recon_camera", "loss/recon_speed"} <= set(metrics)
    assert list(make_env("CartPole-v1").quatrix_info["obs_kinds"]) == ["observation"]
    assert list(make_env("QuatrixWorld/SayColor-v0", drop_keys=("mission",)).quatrix_info["obs_kinds"]) == \
        ["observation"]
    with pytest.raises(EnvError, match=r"env.drop_keys \['missoin'\] are not keys of the observation Dict"):
        make_env("QuatrixWorld/SayColor-v0", drop_keys=("missoin",))


def test_unknown_env_id_suggests_the_same_family_first():
    for typo, hint in (("MiniGrid-Emty-6x6-v0", "did you mean 'MiniGrid-Empty-6x6-v0'"),
                       ("Pendulm-v1", "did you mean 'Pendulum-v1'"),
                       ("QuatrixWorld/SayColour-v0", "did you mean 'QuatrixWorld/SayColor-v0'")):
        with pytest.raises(EnvError, match=hint):
            make_env(typo)
    with pytest.raises(EnvError) as e:
        make_env("Nope-v0")                 # nothing close: no far-fetched guess (it once said 'Hopper-v5')
    assert "did you mean" not in str(e.value) and "unknown env id 'Nope-v0'" in str(e.value)


@pytest.mark.parametrize("hw", [(3, 5), (10, 10), (40, 24)])
def test_grid_holds_frames_of_any_size_under_their_labels(hw):
    from envs.video import grid
    h, w = hw
    a, b = np.array([200, 10, 90], np.uint8), np.array([5, 250, 60], np.uint8)   # colours no caption has
    frames = [[np.broadcast_to(a, (h, w, 3)), None], [np.broadcast_to(b, (h, w, 3))] * 2]
    pic = grid(frames, ["real", "imagined"], ["row a", "row b"], title="t", scale=2)
    assert pic.dtype == np.uint8 and pic.ndim == 3
    assert pic.shape[0] >= 2 * (2 * h + 1)
    # every frame lands whole, upscaled 2x: a tiny frame is not cut by its row's label
    assert (pic == a).all(-1).sum() == 4 * h * w and (pic == b).all(-1).sum() == 2 * 4 * h * w
