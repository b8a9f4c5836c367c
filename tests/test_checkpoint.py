"""Checkpoints: atomic writes, refusal of code-running pickles, clear errors."""
import os
import pickle

import pytest
import torch

from quatrix_world.checkpoint import (CheckpointError, atomic_save, first_difference, load_checkpoint,
                                      save_checkpoint)


def test_round_trip(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(str(p), config_yaml="seed: 1\n", spec={"obs": {"x": [1, 2]}}, state={"w": torch.ones(3)})
    ck = load_checkpoint(str(p))
    assert ck["config"] == "seed: 1\n" and ck["spec"] == {"obs": {"x": [1, 2]}}
    assert torch.equal(ck["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["c.pt"]          # no temp files left behind


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_code_running_pickle_is_refused(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"format": "quatrix-world/1", "x": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(p))
    assert not os.path.exists(MARKER)
    torch.save({"format": "quatrix-world/1", "x": Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(tmp_path / "evil2.pt"))
    assert not os.path.exists(MARKER)


def test_truncated_and_missing(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(str(p), config_yaml="", spec={}, state={"w": torch.randn(1000)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(p))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(str(tmp_path))


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    p = tmp_path / "latest.pt"
    save_checkpoint(str(p), config_yaml="a", spec={}, state={"v": torch.tensor(1)})

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(str(p), config_yaml="b", spec={}, state={"v": torch.tensor(2)})
    monkeypatch.undo()
    assert int(load_checkpoint(str(p))["v"]) == 1
    assert os.listdir(tmp_path) == ["latest.pt"]
    with pytest.raises(CheckpointError, match="does not exist"):
        atomic_save({}, str(tmp_path / "no" / "dir.pt"))


def test_first_difference():
    assert first_difference({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}) == "a.b.1"
    assert first_difference({"a": 1}, {"a": 1}) is None
