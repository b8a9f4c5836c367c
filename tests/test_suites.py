"""Crafter and the DeepMind Control Suite through make_env (envs/crafter.py, envs/dmc.py): the data
contract on real steps, seeding, action repeat, terminated vs truncated, the Crafter score and its
way into evaluation, and a tiny real CLI training on each suite (DMC also resumed exactly).

Each suite's tests skip when its extra is not installed (pip install -e ".[crafter]" / ".[dmc]").
"""
import csv
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchrl.envs.utils import step_mdp

from envs import EnvError, make_env
from envs.crafter import crafter_score

ENV = dict(os.environ, PYTHONWARNINGS="ignore")
NO_CRAFTER = 'the crafter extra is not installed: pip install -e ".[crafter]"'
NO_DMC = 'the dmc extra is not installed: pip install -e ".[dmc]"'
TINY = ["--config", "configs/debug.yaml", "--set", "trainer.total_steps=32", "--set", "trainer.prefill=16",
        "--set", "trainer.eval_every=32", "--set", "trainer.eval_episodes=1", "--set", "trainer.checkpoint_every=16",
        "--set", "trainer.eval_deterministic=false", "--set", "trainer.log_every=10", "--set", "run.update_threads=1",
        "--set", "env.max_episode_steps=20", "--quiet"]


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def rows(run) -> list:
    with open(os.path.join(run, "metrics.csv")) as f:
        return list(csv.reader(f))[1:]


def play(env, actions, td=None):
    """Step a made env with `actions` from a reset (or from `td`) -> list of step tds (stops at done)."""
    td = env.reset() if td is None else td
    out = []
    for a in actions:
        td["action"] = torch.as_tensor(a, dtype=env.action_spec.dtype).reshape(env.action_spec.shape)
        td = env.step(td)
        out.append(td.clone())
        if bool(td["next", "done"]):
            break
        td = step_mdp(td, exclude_action=True)
    return out


def test_crafter_score_is_the_papers_geometric_mean():
    assert crafter_score([0.0] * 22) == 0.0
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    assert crafter_score({"a": 0.0, "b": 100.0}) == pytest.approx(math.sqrt(101) - 1)
    # by hand: the geometric mean of (1 + s_i) over 4 achievements, minus 1
    assert crafter_score([50.0, 10.0, 0.0, 0.0]) == pytest.approx((51 * 11 * 1 * 1) ** (1 / 4) - 1)
    assert crafter_score([50.0, 10.0, 0.0, 0.0]) == pytest.approx(3.8668, abs=1e-4)
    with pytest.raises(EnvError, match="in percent"):
        crafter_score([0.5, 1.5, 120.0])


def test_a_missing_suite_package_names_its_extra():
    import dataclasses

    from envs.families import family_of
    for env_id, extra in (("crafter", "crafter"), ("Crafter-v1", "crafter"), ("dmc/walker-walk", "dmc")):
        family = family_of(env_id)
        assert family.requires[1] == extra and family.register_ids is not None
        missing = dataclasses.replace(family, prefixes=("NoSuchSuite/",), requires=("no_such_module", extra))
        with pytest.raises(EnvError, match=rf'need the .no_such_module. package — pip install -e "\.\[{extra}\]"'):
            missing.register()


# ----------------------------------------------------------------------------- Crafter

@pytest.fixture(scope="module")
def crafter_death():
    """Crafter seed 1 played with seeded random actions until the player dies (~180 steps)."""
    pytest.importorskip("crafter", reason=NO_CRAFTER)
    env = make_env("crafter", seed=1)
    steps = play(env, np.random.default_rng(1).integers(0, 17, 1000))
    return env, steps


def test_crafter_observations_actions_and_seeding():
    pytest.importorskip("crafter", reason=NO_CRAFTER)
    env = make_env("crafter", seed=3)
    assert env.quatrix_info["obs_kinds"] == {"pixels": "image"}
    assert env.quatrix_info["action_kind"] == "discrete" and env.quatrix_info["num_actions"] == 17
    assert env.quatrix_info["max_episode_steps"] == 10_000                  # crafter's length
    actions = np.random.default_rng(0).integers(0, 17, 25)
    a = play(env, actions)
    assert a[0]["pixels"].shape == (64, 64, 3) and a[0]["pixels"].dtype == torch.uint8
    assert a[0]["next", "reward"].dtype == torch.float32
    b = play(make_env("Crafter-v1", seed=3), actions)                        # the same world and moves
    for x, y in zip(a, b):
        assert torch.equal(x["next", "pixels"], y["next", "pixels"])
        assert torch.equal(x["next", "reward"], y["next", "reward"])
    assert not torch.equal(make_env("crafter", seed=4).reset()["pixels"], a[0]["pixels"])
    env.set_seed(3)
    assert torch.equal(env.reset()["pixels"], a[0]["pixels"])              # seeded reset again: same world
    assert env.render_frame().shape == (64, 64, 3)
    big = make_env("crafter", seed=0, render_size=128)
    big.reset()
    assert big.render_frame().shape == (128, 128, 3)
    with pytest.raises(EnvError, match="size must be an int of at least 9"):
        make_env("crafter", size=4)
    from gymnasium.utils.env_checker import data_shares_objects
    infos = [env.gym_env.step(0)[-1] for _ in range(2)]
    assert not data_shares_objects(*infos)                                   # gymnasium's checker asks this
    assert infos[-1]["achievements"].keys() == set(env.gym_env.get_wrapper_attr("achievements"))


def test_crafter_death_terminates_and_its_length_truncates(crafter_death):
    _, steps = crafter_death
    last = steps[-1]["next"]
    assert len(steps) < 1000 and bool(last["terminated"]) and not bool(last["truncated"])
    assert not any(bool(s["next", "done"]) for s in steps[:-1])
    short = make_env("crafter", seed=0, length=5)
    assert short.quatrix_info["max_episode_steps"] == 5
    steps = play(short, [0] * 10)
    assert len(steps) == 5
    assert bool(steps[-1]["next", "truncated"]) and not bool(steps[-1]["next", "terminated"])


def test_crafter_achievements_reach_the_evaluator(crafter_death):
    from agents.evaluate import env_metrics
    died, _ = crafter_death
    unlocked = {k for k, v in died.gym_env.get_wrapper_attr("episode_metrics")().items() if v == 100.0}
    assert unlocked == {"achievement/collect_sapling", "achievement/place_plant", "achievement/wake_up"}
    fresh = make_env("crafter", seed=0)
    play(fresh, [0, 0])                                                      # two no-ops: nothing unlocked
    row = env_metrics([died, fresh])
    names = [k for k in row if k.startswith("eval/achievement/")]
    assert len(names) == 22
    for k in names:
        assert row[k] == (50.0 if k[len("eval/"):] in unlocked else 0.0), k   # success rates in percent
    assert row["eval/crafter_score"] == pytest.approx(51 ** (3 / 22) - 1)      # 3 at 50 %, 19 at 0 %
    assert env_metrics([make_env("CartPole-v1", seed=0)]) == {}              # no hooks: no extra metrics


def test_crafter_trains_through_the_cli(tmp_path):
    pytest.importorskip("crafter", reason=NO_CRAFTER)
    run = str(tmp_path / "crafter")
    cli("train", *TINY, "--set", "env.id=crafter", "--run-dir", run)
    evals = {r[2]: float(r[3]) for r in rows(run) if r[2].startswith("eval/")}
    rates = {k: v for k, v in evals.items() if k.startswith("eval/achievement/")}
    assert len(rates) == 22 and all(0.0 <= v <= 100.0 for v in rates.values())
    assert evals["eval/crafter_score"] == pytest.approx(crafter_score(list(rates.values())), abs=1e-4)
    assert os.path.isfile(os.path.join(run, "checkpoints", "latest.pt"))


# ----------------------------------------------------------------------------- DMC

def test_dmc_pixels_seeding_and_action_bounds():
    pytest.importorskip("dm_control", reason=NO_DMC)
    env = make_env("dmc/cartpole-swingup", seed=0)
    info = env.quatrix_info
    assert info["obs_kinds"] == {"pixels": "image"} and info["action_kind"] == "continuous"
    assert info["max_episode_steps"] == 500                                  # 1000 control steps, repeat 2
    assert env.action_spec.space.low.tolist() == [-1.0] and env.action_spec.space.high.tolist() == [1.0]
    td = env.reset()
    assert td["pixels"].shape == (64, 64, 3) and td["pixels"].dtype == torch.uint8
    assert td["pixels"].float().std() > 5                                    # a rendered scene, not a blank
    again = make_env("dmc/cartpole-swingup", seed=0).reset()
    assert torch.equal(td["pixels"], again["pixels"])
    assert not torch.equal(td["pixels"], make_env("dmc/cartpole-swingup", seed=1).reset()["pixels"])
    assert env.render_frame().shape == (64, 64, 3)
    with pytest.raises(EnvError, match="did you mean 'dmc/walker-walk'"):
        make_env("dmc/walker-walkk")
    with pytest.raises(EnvError, match=r"camera must be an int in \[0, 1\]"):
        make_env("dmc/cartpole-swingup", camera=7)


def test_dmc_action_repeat_sums_rewards():
    pytest.importorskip("dm_control", reason=NO_DMC)
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 1))
    one = play(make_env("dmc/cartpole-swingup", seed=5, action_repeat=1, shadows=False), np.repeat(actions, 2, 0))
    two = play(make_env("dmc/cartpole-swingup", seed=5, shadows=False), actions)
    r1 = np.array([float(s["next", "reward"]) for s in one])
    r2 = np.array([float(s["next", "reward"]) for s in two])
    assert r1.min() > 0                                                      # swingup pays every step
    np.testing.assert_allclose(r2, r1[0::2] + r1[1::2], rtol=1e-5)
    for k in range(len(two)):                                                # the same physics, so the same frame
        assert torch.equal(two[k]["next", "pixels"], one[2 * k + 1]["next", "pixels"])


def test_dmc_time_limit_truncates_and_discount_zero_terminates():
    dm_env = pytest.importorskip("dm_env", reason=NO_DMC)
    pytest.importorskip("dm_control", reason=NO_DMC)
    env = make_env("dmc/cartpole-swingup", seed=0, action_repeat=125, shadows=False)
    assert env.quatrix_info["max_episode_steps"] == 8
    steps = play(env, np.zeros((20, 1)))
    assert len(steps) == 8
    assert bool(steps[-1]["next", "truncated"]) and not bool(steps[-1]["next", "terminated"])
    env = make_env("dmc/cartpole-swingup", seed=0, shadows=False)
    suite_env = env.gym_env.unwrapped._env
    step = suite_env.step
    suite_env.step = lambda a: dm_env.termination(0.25, step(a).observation)   # a task that ends the episode
    steps = play(env, np.zeros((3, 1)))
    assert len(steps) == 1 and float(steps[0]["next", "reward"]) == 0.25          # the repeat stops at the end
    assert bool(steps[0]["next", "terminated"]) and not bool(steps[0]["next", "truncated"])


def test_dmc_proprio_adds_the_state_vector():
    pytest.importorskip("dm_control", reason=NO_DMC)
    env = make_env("dmc/walker-walk", seed=0, proprio=True)
    assert env.quatrix_info["obs_kinds"] == {"pixels": "image", "proprio": "vector"}
    assert env.quatrix_info["action_dim"] == 6
    td = env.reset()
    inner = env.gym_env.unwrapped._env
    state = np.concatenate([np.asarray(v, np.float32).reshape(-1)
                            for v in inner.task.get_observation(inner.physics).values()])
    assert td["proprio"].dtype == torch.float32 and td["proprio"].shape == (24,)
    np.testing.assert_allclose(td["proprio"].numpy(), state, rtol=1e-6)
    assert td["pixels"].shape == (64, 64, 3)


def test_dmc_gl_problems_name_the_apt_packages(monkeypatch):
    pytest.importorskip("dm_control", reason=NO_DMC)
    import dm_control

    from envs.dmc import check_gl, load_suite
    with pytest.raises(EnvError, match="=osmesa, but libOSMesa is not installed — apt-get install libosmesa6$"):
        check_gl("osmesa", find=lambda lib: None)
    with pytest.raises(EnvError, match="apt-get install libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri"):
        check_gl("egl", find=lambda lib: None if lib == "OpenGL" else f"lib{lib}.so")
    check_gl("egl", find=lambda lib: f"lib{lib}.so")                              # all there: no error
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.delattr(dm_control, "suite", raising=False)
    monkeypatch.setitem(sys.modules, "dm_control.suite", None)                 # the GL backend failing to load
    with pytest.raises(EnvError, match="MUJOCO_GL=egl, which failed to start .* apt-get install libegl1"):
        load_suite()


def test_dmc_trains_and_resumes_exactly(tmp_path):
    """The CLI run checkpoints at 16 and 32; its step-16 checkpoint (previous.pt) resumed to 32 (in
    this process, to spare a second start-up) replays the interrupted episode and logs exactly the
    rows of the straight run."""
    pytest.importorskip("dm_control", reason=NO_DMC)
    from agents.trainer import Trainer
    from quatrix_world.checkpoint import load_checkpoint
    from quatrix_world.config import from_dict, read_yaml, validate
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    cli("train", *TINY, "--set", "env.id=dmc/cartpole-swingup", "--set", "env.options.shadows=false",
        "--run-dir", straight)
    shutil.copytree(straight, split)
    os.remove(os.path.join(split, "checkpoints", "latest.pt"))
    cfg = validate(from_dict(read_yaml(os.path.join(split, "config.yaml"))))
    threads = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match=r"previous\.pt \(step 16\)"):      # 16 of the episode's 20 steps
            Trainer(cfg, split, resume=True, quiet=True).train()
    finally:
        torch.set_num_threads(threads)
    key = lambda rs: [(r[0], r[2], r[3]) for r in rs if not r[2].startswith("time/")]
    assert key(rows(split)) == key(rows(straight))
    names = {r[2] for r in rows(straight)}
    assert {"loss/world", "eval/return_sampled", "train/episode_return"} <= names
    a, b = (load_checkpoint(os.path.join(run, "checkpoints", "latest.pt")) for run in (straight, split))
    assert a["counters"]["step"] == b["counters"]["step"] == 32
    for k in a["world"]:
        assert torch.equal(a["world"][k], b["world"][k]), k


def test_suite_configs_load():
    from quatrix_world.config import load_config
    crafter = load_config(["default.yaml", "crafter.yaml"], [])
    dmc = load_config(["default.yaml", "dmc.yaml"], [])
    assert crafter.env.id == "crafter" and dmc.env.id == "dmc/cartpole-swingup"
    assert crafter.trainer.total_steps == 1_000_000 and not crafter.trainer.eval_deterministic


def test_readme_suite_commands_resolve():
    """Each suite's one command in the README names a shipped config and an id of that suite."""
    import re
    from envs.families import family_of
    from quatrix_world.config import load_config
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    commands = re.findall(r"`quatrix-world train --config configs/(\w+)\.yaml((?: --set [^`]+)?)`", readme)
    family_names = {"atari": "Atari", "minatar": "MinAtar", "crafter": "Crafter", "dmc": "DMC"}
    suites = {name: sets for name, sets in commands if name in family_names}
    assert sorted(suites) == sorted(family_names), commands
    for name, sets in suites.items():
        cfg = load_config(["default.yaml", f"{name}.yaml"], sets.split(" --set ")[1:])
        family = family_of(cfg.env.id)
        assert family is not None and family.name == family_names[name], (name, cfg.env.id)
