"""EpisodeReplay: contiguous windows, crossing episodes, never the write cursor, exact resume, disk."""
import pytest
import torch
from tensordict import TensorDict

from envs import EnvError, EpisodeReplay, make_env


def rows(start, n, episode_len):
    """n transitions with global ids start..start+n-1; an episode starts every `episode_len` ids."""
    ids = torch.arange(start, start + n)
    is_init = (ids % episode_len == 0)[:, None]
    end = ((ids + 1) % episode_len == 0)[:, None]
    return TensorDict({
        "observation": ids[:, None].float().expand(n, 3).clone(), "action": ids.clone(), "is_init": is_init,
        "next": {"reward": ids[:, None].float(), "terminated": end, "truncated": torch.zeros_like(end),
                 "done": end, "observation": torch.zeros(n, 3)}}, [n])


def assert_contiguous(batch):
    a = batch["action"]
    assert (a[:, 1:] - a[:, :-1] == 1).all(), a   # consecutive in write order, never newest->oldest


def test_windows_contiguous_and_cross_episodes():
    r = EpisodeReplay(100, 5, 64, seed=0)
    r.extend(rows(0, 60, episode_len=2))            # 2-step episodes
    assert len(r) == 60
    b = r.sample()
    assert b.batch_size == (64, 5)
    assert_contiguous(b)
    assert b["is_init"][:, 1:].any()                # windows cross episode boundaries
    assert torch.equal(b["observation"][..., 0], b["action"].float())
    assert torch.equal(b["next", "reward"][..., 0], b["action"].float())
    # short episodes are usable: every row shows up in some window
    seen = torch.cat([r.sample()["action"].reshape(-1) for _ in range(20)]).unique()
    assert len(seen) == 60
    # next observations are not stored
    assert ("next", "observation") not in b.keys(True)
    assert set(b["next"].keys()) == {"reward", "terminated", "truncated", "done"}


def test_never_straddles_cursor_after_wraparound():
    r = EpisodeReplay(10, 4, 256, seed=1)
    r.extend(rows(0, 7, 3))
    for i in range(7, 23):                           # single steps, batch []
        r.extend(rows(i, 1, 3)[0])
    assert len(r) == 10
    b = r.sample()
    assert_contiguous(b)
    assert b["action"].min() >= 13 and b["action"].max() <= 22
    starts = b["action"][:, 0].unique().tolist()
    assert starts == list(range(13, 20))             # every valid start, none crossing the cursor


def test_requires_seq_len_rows():
    r = EpisodeReplay(10, 4, 2, seed=0)
    r.extend(rows(0, 3, 3))
    with pytest.raises(EnvError, match="holds 3 transitions but windows need seq_len=4"):
        r.sample()
    with pytest.raises(EnvError, match="larger than capacity"):
        EpisodeReplay(3, 4, 2)
    with pytest.raises(EnvError, match="lack next.reward"):
        r.extend(TensorDict({"action": torch.zeros(2), "is_init": torch.zeros(2, 1, dtype=torch.bool)}, [2]))


def test_state_roundtrip_exact(tmp_path):
    r = EpisodeReplay(16, 4, 8, seed=3)
    r.extend(rows(0, 21, 4))
    r.sample()
    path = tmp_path / "replay.pt"
    torch.save(r.state_dict(), path)
    expected = r.sample()
    r2 = EpisodeReplay(16, 4, 8, seed=99)
    r2.load_state_dict(torch.load(path, weights_only=True))
    got = r2.sample()
    assert len(r2) == 16 and (got == expected).all()
    r.extend(rows(21, 3, 4))
    r2.extend(rows(21, 3, 4))
    assert (r.sample() == r2.sample()).all()          # the cursor was restored too
    assert_contiguous(r2.sample())


def test_disk_storage(tmp_path):
    r = EpisodeReplay(12, 3, 4, storage="disk", scratch_dir=str(tmp_path / "replay"), seed=0)
    r.extend(rows(0, 20, 5))
    b = r.sample()
    assert b.batch_size == (4, 3)
    assert_contiguous(b)
    assert r.memory_bytes() > 0
    r.dumps(str(tmp_path / "state.pt"))
    r2 = EpisodeReplay(12, 3, 4, storage="disk", scratch_dir=str(tmp_path / "replay2"), seed=5)
    r2.loads(str(tmp_path / "state.pt"))
    assert (r2.sample() == r.sample()).all()


def test_real_env_rows():
    env = make_env("MiniGrid-Empty-6x6-v0", seed=0)
    r = EpisodeReplay(50, 4, 3, seed=0)
    td = env.rollout(10, break_when_any_done=False)
    r.extend(td)
    b = r.sample()
    assert b["image"].shape == (3, 4, 56, 56, 3) and b["image"].dtype == torch.uint8
    assert b["mission"].shape == (3, 4, 16) and b["is_init"].shape == (3, 4, 1)
    assert b["next", "reward"].shape == (3, 4, 1)
    per_row = sum(v.numel() * v.element_size() for v in b[0, 0].values(True, True))
    assert r.memory_bytes() == 50 * per_row


def test_lane_replay_keeps_lanes_apart():
    from envs import LaneReplay
    N, T = 3, 4
    r = LaneReplay(N, capacity=60, seq_len=T, batch_size=64, seed=0)
    assert not r.ready()
    for t in range(12):                      # one vector step: lane i's row carries id 100*i + t
        step = torch.cat([rows(100 * i + t, 1, episode_len=5) for i in range(N)])
        r.extend(step)
    assert len(r) == 36 and r.ready()
    b = r.sample()
    assert b.batch_size == (64, T)
    assert_contiguous(b)                     # consecutive in time within one lane
    lane = b["action"] // 100
    assert (lane == lane[:, :1]).all()       # a window never joins two lanes
    assert set(lane[:, 0].tolist()) == {0, 1, 2}
    # reproducible, and state round-trips exactly
    r2 = LaneReplay(N, capacity=60, seq_len=T, batch_size=64, seed=5)
    r2.load_state_dict(r.state_dict())
    assert torch.equal(r.sample()["action"], r2.sample()["action"])
    with pytest.raises(EnvError, match="trainer.num_envs=3"):
        LaneReplay(2, capacity=60, seq_len=T, batch_size=8).load_state_dict(r.state_dict())
    with pytest.raises(EnvError, match="one \\[3\\] TensorDict"):
        r.extend(rows(0, 2, 5))
    with pytest.raises(EnvError, match="raise the capacity"):
        LaneReplay(4, capacity=10, seq_len=T, batch_size=8)


def sparse_rows(start, n, rewarded):
    """rows(start, n) whose reward is 1 only at the global ids in `rewarded`, 0 elsewhere."""
    td = rows(start, n, episode_len=50)
    td["next", "reward"] = torch.isin(td["action"], torch.tensor(rewarded, dtype=torch.long))[:, None].float()
    return td


def test_reward_windows_hold_a_rewarded_row_and_respect_the_cursor(tmp_path):
    with pytest.raises(EnvError, match="reward_windows is a share"):
        EpisodeReplay(100, 5, 8, reward_windows=1.5)
    B = 40
    uniform = EpisodeReplay(60, 5, B, seed=0)
    biased = EpisodeReplay(60, 5, B, seed=0, reward_windows=0.5)
    for r in (uniform, biased):
        r.extend(sparse_rows(0, 50, rewarded=[17]))
    def share(r, draws=20):            # share of windows holding the rewarded row
        return torch.stack([r.sample()["next", "reward"].amax((1, 2)) for _ in range(draws)]).mean().item()
    assert share(uniform) < 0.2                       # 5 of 46 starts hold id 17
    assert 0.5 <= share(biased) < 0.75                # half drawn around it (+ the uniform half's ~11%)
    b = biased.sample()
    assert_contiguous(b)
    # the row at every window position: row 17 lands anywhere in the window, not only first or last
    pos = (17 - b["action"][:, 0])[b["next", "reward"].amax((1, 2)) > 0]
    assert set(pos.tolist()) == set(range(5))
    # overwritten: rows 0..19 are replaced (ids 60..79), row 17 with them; only uniform windows remain
    biased.extend(sparse_rows(50, 30, rewarded=[]))
    b = biased.sample()
    assert_contiguous(b)
    assert b["next", "reward"].sum() == 0 and b["action"].min() >= 20
    # a rewarded row next to the cursor: its windows stay on its side of the seam
    biased.extend(sparse_rows(80, 3, rewarded=[82]))  # newest row, id 82
    for _ in range(5):
        b = biased.sample()
        assert_contiguous(b)
        assert b["next", "reward"].amax((1, 2)).mean() >= 0.3
    # exact resume rebuilds which rows are rewarded from the stored rows
    torch.save(biased.state_dict(), tmp_path / "replay.pt")
    expected = biased.sample()
    again = EpisodeReplay(60, 5, B, seed=7, reward_windows=0.5)
    again.load_state_dict(torch.load(tmp_path / "replay.pt", weights_only=True))
    assert (again.sample() == expected).all()


def test_reward_windows_off_draws_uniform_starts_as_before():
    """reward_windows=0: the window starts are exactly the uniform draws of the replay's seeded generator
    (so runs without the option are unchanged); with it on, the draws differ."""
    from envs.replay import seeded_generator
    for share, same in ((0.0, True), (0.25, False)):
        r = EpisodeReplay(50, 4, 16, seed=3, reward_windows=share)
        r.extend(sparse_rows(0, 30, rewarded=[9]))
        g = seeded_generator(3)
        got = [torch.equal(r.sample()["action"][:, 0], torch.randint(27, (16,), generator=g)) for _ in range(2)]
        assert all(got) == same, (share, got)
