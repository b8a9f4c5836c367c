"""Seeds and RNG state: every generator a run draws from, saved in and restored from checkpoints."""
from __future__ import annotations

import json
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate()),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                      "gauss": np_state[3], "cached": np_state[4]}}


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    st = json.loads(d["python"])
    random.setstate((st[0], tuple(st[1]), st[2]))
    n = d["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["gauss"], n["cached"]))
