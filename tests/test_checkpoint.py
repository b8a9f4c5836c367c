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


def _save(p, step, w):
    save_checkpoint(str(p), config_yaml="seed: 1\n", spec={"obs": {}}, state={"w": w, "counters": {"step": step}},
                    keep_previous=True)


def test_content_checksum_catches_changed_bytes(tmp_path):
    p = tmp_path / "latest.pt"
    _save(p, 1, torch.arange(1000, dtype=torch.float32))
    payload = torch.load(p, weights_only=True)
    payload["w"][500] += 1e-3                      # one weight changed behind the checksum's back
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match="does not match the SHA-256 stored with it"):
        load_checkpoint(str(p))
    _save(p, 1, torch.arange(100_000, dtype=torch.float32))
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])        # 64 flipped bytes on disk
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(p))


def test_the_last_two_checkpoints_are_kept(tmp_path):
    p = tmp_path / "latest.pt"
    for step in (1, 2, 3):
        _save(p, step, torch.full((4,), float(step)))
    assert sorted(os.listdir(tmp_path)) == ["latest.pt", "previous.pt"]
    assert load_checkpoint(str(p))["counters"]["step"] == 3
    assert load_checkpoint(str(tmp_path / "previous.pt"))["counters"]["step"] == 2


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    cfg = load_config(["default.yaml", "debug.yaml"], ["trainer.progress=false", "trainer.total_steps=200",
                                                       "trainer.checkpoint_every=100", "trainer.eval_every=1000"])
    run = tmp_path / "run"
    Trainer(cfg, str(run), quiet=True).train()
    ck = run / "checkpoints"
    assert load_checkpoint(str(ck / "previous.pt"))["counters"]["step"] == 100
    (ck / "latest.pt").write_bytes((ck / "latest.pt").read_bytes()[:5000])      # torn by a crash
    with pytest.warns(UserWarning, match="resuming from .*previous.pt \\(step 100\\)"):
        tr = Trainer(cfg, str(run), resume=True, quiet=True)
    assert tr.step == 100
    tr.close()                                     # let go of the run folder
    (ck / "previous.pt").unlink()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Trainer(cfg, str(run), resume=True, quiet=True)


def test_atomic_path_all_or_nothing(tmp_path):
    from quatrix_world.files import atomic_path, write_json
    p = tmp_path / "out.json"
    write_json({"a": 1}, str(p))
    assert p.read_text() == '{\n  "a": 1\n}\n'
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_path(str(p)) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("midway")
    assert p.read_text() == '{\n  "a": 1\n}\n' and sorted(os.listdir(tmp_path)) == ["out.json"]
    with atomic_path(str(p), previous=str(tmp_path / "old.json")) as tmp:
        open(tmp, "w").write("new")
    assert p.read_text() == "new" and (tmp_path / "old.json").read_text().startswith("{")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m
