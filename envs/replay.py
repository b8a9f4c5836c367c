"""EpisodeReplay: a replay of single transitions from one env stream, sampled as [B, T] windows.

Storage is torchrl's (LazyTensorStorage in memory, LazyMemmapStorage on disk) written round-robin
by a RoundRobinWriter; windows are drawn by `ContiguousWindowSampler`, a torchrl Sampler. Only
torchrl's public API is used (the buffer's storage and writer, their get/set and state_dict).

Design (fixed): a window is T *consecutive rows* in write order. Windows MAY cross episode
boundaries — the world model resets its context where `is_init` is True — so even 2-step episodes
are always usable. A window never straddles the write cursor: it never joins the newest row to the
oldest one, which were not consecutive in time.

Rows hold only what training needs: observation keys at t, action, is_init, and next.reward,
next.terminated, next.truncated, next.done. Next observations are NOT stored (they are the next
row's observations), which halves memory.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.writers import RoundRobinWriter

from quatrix_world.files import atomic_path

from .errors import EnvError

@contextlib.contextmanager
def _quiet_torchrl(active: bool):
    """Hide torchrl's INFO line when a lazy storage initialises (it goes to stdout)."""
    log = logging.getLogger("torchrl")
    old = log.level
    if active:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if active:
            log.setLevel(old)


NEXT_KEYS = ("reward", "terminated", "truncated", "done")
ROOT_SKIP = ("next", "done", "terminated", "truncated")


class ContiguousWindowSampler(Sampler):
    """Samples `batch_size // seq_len` windows of `seq_len` consecutive rows (flat index, window-major).

    Window starts are uniform over all positions whose window lies entirely in the written data and
    does not cross the writer's cursor (the seam between the newest and the oldest row).

    `reward_windows` (a share in [0, 1]): that share of each batch's windows (on average) is drawn around
    a rewarded row instead — a row with next.reward != 0, chosen uniformly among those stored, at a
    uniform position in its window. The rest stay uniform. With a sparse reward (a goal reached once in
    thousands of steps) a uniform batch rarely holds one, and the reward head learns it late; with a
    dense reward every row is rewarded and the windows stay uniform. 0 (or no rewarded row yet): all
    windows uniform, with the same random draws as a sampler without the option.
    """

    def __init__(self, seq_len: int, writer: RoundRobinWriter, generator: torch.Generator | None = None,
                 reward_windows: float = 0.0):
        self.seq_len = int(seq_len)
        self.writer, self.generator = writer, generator
        self.reward_windows = float(reward_windows)
        self.rewarded: torch.Tensor | None = None       # [capacity] bool: row holds next.reward != 0

    def mark(self, index: torch.Tensor, rows: TensorDictBase, capacity: int) -> None:
        """Record which of the rows [n] just written at `index` [n] hold a nonzero next.reward."""
        if self.rewarded is None:
            self.rewarded = torch.zeros(capacity, dtype=torch.bool)
        rewarded = rows.get(("next", "reward")).reshape(len(index), -1).ne(0).any(-1)
        self.rewarded[index.reshape(-1).cpu()] = rewarded.cpu()

    def window_starts(self, storage) -> tuple[int, int, int]:
        """-> (base, number of valid starts, capacity): start s in [0, n) maps to rows (base+s+j) % capacity."""
        n, cap = len(storage), int(storage.max_size)
        base = int(self.writer.state_dict()["_cursor"]) % cap if n >= cap else 0
        return base, max(0, n - self.seq_len + 1), cap

    def sample(self, storage, batch_size: int):
        if batch_size % self.seq_len:
            raise ValueError(f"batch_size {batch_size} is not a multiple of seq_len {self.seq_len}")
        base, count, cap = self.window_starts(storage)
        if count <= 0:
            raise EnvError(f"the replay holds {len(storage)} transitions but windows need seq_len={self.seq_len} — "
                           "collect more steps before sampling")
        B = batch_size // self.seq_len
        starts = torch.randint(count, (B,), generator=self.generator)
        k = 0
        if self.reward_windows > 0 and self.rewarded is not None:   # share x B windows, stochastically rounded
            k = int(self.reward_windows * B + torch.rand((), generator=self.generator))
        if k:
            pos = (torch.nonzero(self.rewarded).reshape(-1) - base) % cap    # rewarded rows, in time order
            pos = pos[pos < len(storage)]
            if len(pos):
                row = pos[torch.randint(len(pos), (k,), generator=self.generator)]
                offset = torch.randint(self.seq_len, (k,), generator=self.generator)
                starts[:k] = (row - offset).clamp(0, count - 1)          # the window [start, start+T) holds row
        index = (base + starts[:, None] + torch.arange(self.seq_len)) % cap
        return index.reshape(-1), {"starts": starts}

    def _sampleable_count(self, storage, batch_size):
        return self.window_starts(storage)[1]

    def state_dict(self):
        return {"seq_len": self.seq_len}

    def load_state_dict(self, state_dict):
        self.seq_len = int(state_dict["seq_len"])

    def _empty(self):
        return

    def dumps(self, path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "sampler_metadata.json").write_text(json.dumps(self.state_dict()))

    def loads(self, path):
        self.load_state_dict(json.loads((Path(path) / "sampler_metadata.json").read_text()))

    def __repr__(self):
        return f"ContiguousWindowSampler(seq_len={self.seq_len})"


def seeded_generator(seed: int | None) -> torch.Generator:
    """A torch.Generator seeded with `seed`, or from OS entropy when seed is None."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


class EpisodeReplay:
    """Transitions in, [batch_size, seq_len] windows out. See the module docstring for the design."""

    def __init__(self, capacity: int, seq_len: int, batch_size: int, storage: str = "memory",
                 scratch_dir: str | None = None, device="cpu", seed: int | None = None, reward_windows: float = 0.0):
        if not 0.0 <= reward_windows <= 1.0:
            raise EnvError(f"EpisodeReplay reward_windows is a share of each batch's windows, in [0, 1]; "
                           f"got {reward_windows!r}")
        for name, v in (("capacity", capacity), ("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(v, int) or v < 1:
                raise EnvError(f"EpisodeReplay {name} must be a positive int, got {v!r}")
        if seq_len > capacity:
            raise EnvError(f"EpisodeReplay seq_len={seq_len} is larger than capacity={capacity} — raise the capacity")
        if storage not in ("memory", "disk"):
            raise EnvError(f"EpisodeReplay storage must be 'memory' or 'disk', got {storage!r}")
        self.capacity, self.seq_len, self.batch_size = capacity, seq_len, batch_size
        self.storage_kind, self.device = storage, torch.device(device)
        if storage == "disk":
            if scratch_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="quatrix-replay-")
                scratch_dir = self._tmp.name
            os.makedirs(scratch_dir, exist_ok=True)
            self.scratch_dir = scratch_dir
            store = LazyMemmapStorage(capacity, scratch_dir=scratch_dir, device="cpu")
        else:
            self.scratch_dir = None
            store = LazyTensorStorage(capacity, device=self.device)
        self.generator = seeded_generator(seed)
        self.writer = RoundRobinWriter()
        self.sampler = ContiguousWindowSampler(seq_len, self.writer, self.generator, reward_windows)
        self.buffer = ReplayBuffer(storage=store, sampler=self.sampler, writer=self.writer,
                                   generator=self.generator)     # batch size given at each sample()
        self.storage = self.buffer.storage
        self._keys: list | None = None

    # ------------------------------------------------------------------ writing
    def _rows(self, td: TensorDictBase) -> TensorDictBase:
        if not isinstance(td, TensorDictBase):
            raise EnvError(f"EpisodeReplay.extend takes a TensorDict of transitions, got {type(td).__name__}")
        if td.batch_dims == 0:
            td = td.unsqueeze(0)
        elif td.batch_dims > 1:
            td = td.reshape(-1)
        keys = td.keys(include_nested=True, leaves_only=True)
        missing = [k for k in ("action", "is_init", ("next", "reward"), ("next", "terminated"), ("next", "done"))
                   if k not in keys]
        if missing:
            names = ", ".join(".".join(k) if isinstance(k, tuple) else k for k in missing)
            raise EnvError(f"transitions lack {names} — extend with rows from env.step(): obs keys, action, is_init "
                           "and next.reward/terminated/truncated/done")
        root = [k for k in td.keys() if k not in ROOT_SKIP]
        nxt = [("next", k) for k in NEXT_KEYS if ("next", k) in keys]
        rows = td.select(*root, *nxt)
        if ("next", "truncated") not in keys:
            rows.set(("next", "truncated"), torch.zeros_like(rows.get(("next", "done"))))
        sig = sorted(str(k) for k in rows.keys(include_nested=True, leaves_only=True))
        if self._keys is None:
            self._keys = sig
        elif sig != self._keys:
            raise EnvError(f"transition keys changed: the replay holds {self._keys}, got {sig} — store one env's rows")
        return rows

    def extend(self, td: TensorDictBase) -> None:
        """Append transitions (batch [n], or [] for one step) in time order from ONE env stream."""
        rows = self._rows(td)
        if self.device.type != "cpu" or self.storage_kind == "memory":
            rows = rows.to(self.storage.device if self.storage_kind == "memory" else "cpu")
        with _quiet_torchrl(len(self) == 0):                  # the lazy storage initialises on the first write
            index = self.buffer.extend(rows)
        self.sampler.mark(index, rows, self.capacity)

    add = extend

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.buffer)

    def ready(self) -> bool:
        """True once a [batch_size, seq_len] batch can be sampled."""
        return len(self) >= self.seq_len

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        """-> TensorDict [batch_size, seq_len] of consecutive rows (reproducible given the seed)."""
        B = self.batch_size if batch_size is None else int(batch_size)
        if len(self) < self.seq_len:
            raise EnvError(f"the replay holds {len(self)} transitions but windows need seq_len={self.seq_len} — "
                           "collect more steps before sampling")
        td = self.buffer.sample(B * self.seq_len)
        td = td.reshape(B, self.seq_len)
        return td.to(self.device) if td.device != self.device else td

    def memory_bytes(self) -> int:
        """Bytes held by the stored tensors (on disk for storage='disk')."""
        if len(self) == 0:
            return 0
        row = self.storage.get(torch.zeros(1, dtype=torch.long))       # lazy storages allocate every row at once
        return int(self.capacity * sum(t.numel() * t.element_size() for t in row.values(True, True)))

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict:
        """Plain dict of tensors/ints (loads with torch.load(weights_only=True)): rows, cursor, RNG state."""
        n = len(self)
        rows = self.storage.get(torch.arange(n)) if n else None
        w = self.writer.state_dict()
        return {"capacity": self.capacity, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "len": n, "cursor": int(w["_cursor"]), "write_count": int(w["_write_count"]),
                "rows": rows.to("cpu").to_dict() if rows is not None else {},
                "keys": list(self._keys or []), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or state["seq_len"] != self.seq_len:
            raise EnvError(f"replay state has capacity={state['capacity']} seq_len={state['seq_len']}, this replay "
                           f"capacity={self.capacity} seq_len={self.seq_len} — build it with the saved sizes")
        n = int(state["len"])
        self.buffer.empty()
        if n:
            rows = TensorDict.from_dict(state["rows"], batch_size=[n], auto_batch_size=False)
            with _quiet_torchrl(True):
                self.storage.set(torch.arange(n), rows.to(self.storage.device))
            self.sampler.mark(torch.arange(n), rows, self.capacity)
        else:
            self.sampler.rewarded = None
        self.writer.load_state_dict({"_cursor": int(state["cursor"]), "_write_count": int(state["write_count"])})
        self._keys = list(state["keys"]) or None
        self.generator.set_state(state["rng"])

    def dumps(self, path: str) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def loads(self, path: str) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def __repr__(self) -> str:
        return (f"EpisodeReplay({len(self)}/{self.capacity} transitions, seq_len={self.seq_len}, "
                f"batch_size={self.batch_size}, storage={self.storage_kind})")


class LaneReplay:
    """One EpisodeReplay per env lane, for a batched env: rows [N] in, [B, T] windows out.

    Lane i's rows form one stream in time order, so a window never joins two envs. Each lane holds
    capacity // N rows; a batch takes its B windows from lanes drawn uniformly (with the replay's
    generator, so sampling is reproducible) among the lanes that can already fill a window.
    """

    def __init__(self, num_lanes: int, capacity: int, seq_len: int, batch_size: int, storage: str = "memory",
                 scratch_dir: str | None = None, device="cpu", seed: int | None = None, reward_windows: float = 0.0):
        if not isinstance(num_lanes, int) or num_lanes < 1:
            raise EnvError(f"LaneReplay num_lanes must be a positive int, got {num_lanes!r}")
        if capacity // num_lanes < seq_len:
            raise EnvError(f"replay capacity {capacity} split over {num_lanes} env lanes leaves {capacity // num_lanes} "
                           f"rows per lane, fewer than seq_len={seq_len} — raise the capacity")
        self.num_lanes, self.capacity, self.seq_len, self.batch_size = num_lanes, capacity, seq_len, batch_size
        self.lanes = [EpisodeReplay(capacity // num_lanes, seq_len, batch_size, storage=storage,
                                    scratch_dir=None if scratch_dir is None else os.path.join(scratch_dir, f"lane{i}"),
                                    device=device, seed=None if seed is None else seed * 1009 + i,
                                    reward_windows=reward_windows)
                      for i in range(num_lanes)]
        self.generator = seeded_generator(seed)

    def extend(self, td: TensorDictBase) -> None:
        """Append one vector step: row i (of a [N] TensorDict) goes to lane i."""
        if not isinstance(td, TensorDictBase) or td.batch_dims != 1 or td.shape[0] != self.num_lanes:
            shape = tuple(td.shape) if isinstance(td, TensorDictBase) else type(td).__name__
            raise EnvError(f"LaneReplay.extend takes one [{self.num_lanes}] TensorDict per vector step "
                           f"(one row per env lane), got {shape}")
        for lane, row in zip(self.lanes, td.unbind(0)):
            lane.extend(row)

    add = extend

    def __len__(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def ready(self) -> bool:
        return any(lane.ready() for lane in self.lanes)

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        """-> TensorDict [batch_size, seq_len]; each window from one lane."""
        B = self.batch_size if batch_size is None else int(batch_size)
        ready = [i for i, lane in enumerate(self.lanes) if lane.ready()]
        if not ready:
            raise EnvError(f"no env lane holds seq_len={self.seq_len} transitions yet — collect more steps before sampling")
        pick = torch.tensor(ready)[torch.randint(len(ready), (B,), generator=self.generator)]
        counts = torch.bincount(pick, minlength=self.num_lanes).tolist()
        parts = [self.lanes[i].sample(c) for i, c in enumerate(counts) if c]
        return torch.cat(parts, 0)

    def memory_bytes(self) -> int:
        return sum(lane.memory_bytes() for lane in self.lanes)

    def state_dict(self) -> dict:
        return {"num_lanes": self.num_lanes, "lanes": [lane.state_dict() for lane in self.lanes],
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("num_lanes", 1)
        if saved != self.num_lanes:
            raise EnvError(f"the replay was saved with {saved} env lane(s), this run has {self.num_lanes} — "
                           f"resume with trainer.num_envs={saved}")
        for lane, st in zip(self.lanes, state["lanes"]):
            lane.load_state_dict(st)
        self.generator.set_state(state["rng"])

    def __repr__(self) -> str:
        return (f"LaneReplay({self.num_lanes} lanes, {len(self)}/{self.capacity} transitions, "
                f"seq_len={self.seq_len}, batch_size={self.batch_size})")
