"""What a run writes as it trains: metrics.csv, TensorBoard events, curves.png, GIFs in TensorBoard.

metrics.csv has one row per scalar: step, seconds (training wall-clock), name, value. Names are
namespaced: `loss/…`, `world/…`, `agent/…`, `train/…`, `eval/…`, `time/…`.
"""
from __future__ import annotations

import csv
import os

from quatrix_world.errors import QuatrixError
from quatrix_world.files import atomic_path


class RunLogger:
    def __init__(self, run_dir: str, purge_after: int = 0):
        self.run_dir = run_dir
        self.metrics_path = os.path.join(run_dir, "metrics.csv")
        self.purge_after = purge_after          # a resumed run: TensorBoard drops events after this step
        self._tb = None

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(self.run_dir, purge_step=self.purge_after + 1 if self.purge_after else None)
        return self._tb

    def scalars(self, metrics: dict, step: int, seconds: float) -> None:
        new = not os.path.exists(self.metrics_path)
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "seconds", "name", "value"])
            for k, v in metrics.items():
                w.writerow([step, f"{seconds:.2f}", k, f"{float(v):.6g}"])
                self.tb.add_scalar(k, float(v), step)

    def truncate(self, step: int) -> None:
        """Before a (resumed) run appends: drop rows logged after the checkpoint's step (they are about
        to be redone) and a torn last line left by a kill mid-write, so no row is ever merged."""
        if not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise QuatrixError(f"{self.metrics_path} is not UTF-8 text (byte {e.start}) — restore it or delete it "
                               "to start the metrics afresh") from None
        complete = text[:text.rfind("\n") + 1]                     # a torn last line has no newline
        rows = list(csv.reader(complete.splitlines()))
        header, body = (rows[0], rows[1:]) if rows else (["step", "seconds", "name", "value"], [])
        keep = [r for r in body if len(r) == 4 and r[0].isdigit() and int(r[0]) <= step]
        if len(keep) != len(body) or complete != text:
            with atomic_path(self.metrics_path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([header] + keep)

    def video(self, tag: str, frames, step: int) -> None:
        from .tb_video import add_gif
        add_gif(self.tb, tag, frames, step)

    def curves(self, history: list[dict], title: str) -> None:
        """curves.png: eval return against env steps and against wall-clock seconds."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        steps = [r["step"] for r in history]
        secs = [r["seconds"] for r in history]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for key, label in (("eval/return", "deterministic"), ("eval/return_sampled", "sampled")):
            if all(key in r for r in history):
                ax[0].plot(steps, [r[key] for r in history], marker="o", label=label)
                ax[1].plot(secs, [r[key] for r in history], marker="o", label=label)
        ax[0].set_xlabel("env steps")
        ax[1].set_xlabel("wall-clock seconds")
        for a in ax:
            a.set_ylabel("eval return")
            a.grid(alpha=0.3)
            a.legend()
        fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(os.path.join(self.run_dir, "curves.png")) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
        plt.close(fig)

    def progress(self, total: int, initial: int, desc: str):
        """A tqdm bar over env steps; its postfix shows the last episode's return (ret) and the
        number of gradient updates so far (upd)."""
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=desc)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
