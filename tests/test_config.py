import os

import pytest

from quatrix_world.config import (Config, ConfigError, config_from_yaml_text, list_shipped_configs,
                                  load_config, to_yaml)


def test_layering_and_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("trainer:\n  batch_size: 8\n  seq_len: 32\nagent:\n  kind: grpo\n")
    b.write_text("trainer:\n  batch_size: 12\n")
    cfg = load_config([str(a), str(b)], ["trainer.seq_len=24", "agent.lr=1e-3", "world.encoder.kinds={pixels: image}"])
    assert cfg.trainer.batch_size == 12          # later file wins
    assert cfg.trainer.seq_len == 24             # --set wins over files
    assert cfg.agent.kind == "grpo"              # untouched keys survive layering
    assert cfg.agent.lr == 0.001
    assert cfg.world.encoder.kinds == {"pixels": "image"}


def test_agent_kind_sections_apply_to_that_kind_only(tmp_path):
    task = {"agent": {"horizon": 12, "starts": 40}, "grpo": {"starts": 16, "epochs": 3},
            "actor_critic": {"entropy": 1e-3}}
    ac = load_config(["default.yaml", task])
    assert (ac.agent.starts, ac.agent.epochs, ac.agent.entropy, ac.agent.horizon) == (40, 2, 1e-3, 12)
    grpo = load_config(["default.yaml", task], ["agent.kind=grpo"])                 # the kind from --set
    assert (grpo.agent.starts, grpo.agent.epochs, grpo.agent.entropy, grpo.agent.horizon) == (16, 3, 3e-4, 12)
    assert load_config(["default.yaml", task, {"agent": {"kind": "grpo"}}]).agent.starts == 16   # from a later layer
    assert load_config(["default.yaml", task, {"agent": {"starts": 8}}], ["agent.kind=grpo"]).agent.starts == 8
    assert load_config(["default.yaml", task], ["agent.kind=grpo", "agent.starts=4"]).agent.starts == 4   # --set wins
    assert task["grpo"] == {"starts": 16, "epochs": 3}                              # the caller's dict is untouched
    assert config_from_yaml_text(to_yaml(grpo)) == grpo                             # saved resolved, no sections
    f = tmp_path / "bad.yaml"
    f.write_text("grpo: 16\n")
    with pytest.raises(ConfigError, match="'grpo' must be a mapping of agent settings for agent.kind=grpo"):
        load_config(["default.yaml", str(f)])
    with pytest.raises(ConfigError, match="agent.startz"):
        load_config(["default.yaml", {"grpo": {"startz": 16}}], ["agent.kind=grpo"])
    doorkey = load_config(["default.yaml", "minigrid_doorkey.yaml"], ["agent.kind=grpo"])
    assert (doorkey.agent.starts, load_config(["default.yaml", "minigrid_doorkey.yaml"]).agent.starts) == (16, 64)


def test_round_trip():
    cfg = load_config(["default.yaml", "debug.yaml"], ["seed=7"])
    assert config_from_yaml_text(to_yaml(cfg)) == cfg
    assert cfg.seed == 7


def test_all_shipped_configs_load():
    names = list_shipped_configs()
    assert {"default.yaml", "debug.yaml", "minigrid_empty.yaml", "minigrid_doorkey.yaml",
            "cartpole.yaml", "pendulum.yaml"} <= set(names)
    for name in names:
        assert isinstance(load_config(["default.yaml", name]), Config)


@pytest.mark.parametrize("override, fragment", [
    ("trainer.batchsize=3", "did you mean 'trainer.batch_size'"),
    ("trainr.batch_size=3", "did you mean 'trainer.batch_size'"),
    ("trainer.batch_size=abc", "wrong type for 'trainer.batch_size': expected int"),
    ("trainer.batch_size=0", "trainer.batch_size must be > 0"),
    ("agent.horizon=-1", "agent.horizon must be > 0"),
    ("agent.group_size=0", "agent.group_size must be > 0"),
    ("trainer.replay_ratio=0", "trainer.replay_ratio must be > 0"),
    ("agent.kind=ppo", "agent.kind must be one of actor_critic, grpo"),
    ("agent.grpo_advantage=std", "agent.grpo_advantage must be one of group_std, return_scale"),
    ("agent.grpo_critic_mix=1.5", "agent.grpo_critic_mix is the critic's share of GRPO's advantage, in [0, 1]"),
    ("batch_size", "must look like key=value"),
    ("trainer.world_lr=.nan", "trainer.world_lr must be a finite number"),
    ("trainer.replay_ratio=.inf", "trainer.replay_ratio must be a finite number"),
    ("agent.entropy=-.inf", "agent.entropy must be a finite number"),
    ("seed=-3", "seed must be >= 0"),
    ("agent.entropy_target=1.0", "0 <= agent.entropy_target < 1"),
    ("agent.entropy_max_ratio=0.5", "agent.entropy_max_ratio >= 1"),
    ("run.threads=-2", "run.threads must be >= 0"),
    ("trainer.reward_windows=1.5", "trainer.reward_windows is a share of each batch's windows, in [0, 1]"),
    ("trainer.random_actions=1", "trainer.random_actions is the probability of a random action while collecting"),
    ("trainer.reward_windows=-0.1", "trainer.reward_windows is a share of each batch's windows, in [0, 1]"),
    ("model.mixer=mha", "unknown key 'model.mixer'"),
    ("agent.horizon=40", "agent.context_len + agent.horizon (8+40) must be <= trainer.seq_len (32)"),
])
def test_override_errors(override, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        load_config([], [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  batch_size: 4\n  seq_len: [1, 2\n")
    with pytest.raises(ConfigError, match="line 4"):
        load_config([str(bad)])
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    with pytest.raises(ConfigError, match="refused YAML tag"):
        load_config([str(evil)])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("world:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'world.hidden_size'"):
        load_config([str(unknown)])


def test_grpo_needs_a_group():
    with pytest.raises(ConfigError, match="agent.group_size must be >= 2 for GRPO"):
        load_config([], ["agent.kind=grpo", "agent.group_size=1"])
    assert load_config([], ["agent.group_size=1"]).agent.group_size == 1     # actor-critic ignores it


def test_a_missing_path_is_not_replaced_by_a_shipped_config(tmp_path):
    assert load_config(["debug.yaml"]).trainer.total_steps == load_config(["configs/debug.yaml"]).trainer.total_steps
    with pytest.raises(ConfigError, match="config file not found: '/nonexistent/dir/debug.yaml'"):
        load_config(["/nonexistent/dir/debug.yaml"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "debug.yaml")])


def test_default_run_folder_names_the_config_agent_and_seed():
    from quatrix_world.config import ConfigError, default_run_dir
    cfg = load_config(["default.yaml", "debug.yaml"], ["agent.kind=grpo", "seed=3"])
    assert default_run_dir(cfg, ["configs/debug.yaml"]) == os.path.join("runs", "debug-grpo-s3")
    assert default_run_dir(load_config(["default.yaml"]), []) == os.path.join("runs", "run-actor_critic-s0")
    cfg = load_config(["default.yaml", {"run": {"name": "mine_{env}"}}], ["env.id=QuatrixWorld/SayColor-v0"])
    assert default_run_dir(cfg) == os.path.join("runs", "mine_QuatrixWorld-SayColor-v0")
    for bad in ("{agnet}", "{seed.x}", "{agent[x]}", "{"):
        with pytest.raises(ConfigError, match="run.name .* has an unknown placeholder"):
            load_config(["default.yaml", {"run": {"name": bad}}])
