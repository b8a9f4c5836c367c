"""What a run writes as it trains: metrics.csv, TensorBoard events, curves.png, GIFs in TensorBoard.

metrics.csv has one row per scalar: step, seconds (training wall-clock), name, value. Names are
namespaced: `loss/…`, `world/…`, `agent/…`, `train/…`, `eval/…`, `time/…`. curves.png draws them
as small multiples (PANELS), from the first logged row on.
"""
from __future__ import annotations

import csv
import math
import os
import time

from quatrix_world.errors import QuatrixError
from quatrix_world.files import atomic_path


class RunLogger:
    def __init__(self, run_dir: str, purge_after: int = 0):
        self.run_dir = run_dir
        self.metrics_path = os.path.join(run_dir, "metrics.csv")
        self.purge_after = purge_after          # a resumed run: TensorBoard drops events after this step
        self._tb = None
        self._curves_at = None                  # when curves.png was last drawn (time.monotonic())
        self._written, self._drawn = 0, -1      # rows written by this process; the count at the last drawing
        self.curves_every = 30.0

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
        self._written += len(metrics)

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

    def maybe_curves(self, title: str, force: bool = False) -> None:
        """Redraw curves.png from metrics.csv: at the first logged row, when the run ends (`force`),
        and otherwise at most every `curves_every` seconds — never when no row came since."""
        now = time.monotonic()
        if not os.path.exists(self.metrics_path) or self._drawn == self._written:
            return                                   # nothing new since the last drawing
        if not force and self._curves_at is not None and now - self._curves_at < self.curves_every:
            return
        self._curves_at, self._drawn = now, self._written
        plot_curves(read_metrics(self.metrics_path), os.path.join(self.run_dir, "curves.png"), title)

    def progress(self, total: int, initial: int, desc: str):
        """A tqdm bar over env steps; its postfix shows the last episode's return (ret) and the
        number of gradient updates so far (upd)."""
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=desc)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str) -> dict[str, list[tuple[int, float, float]]]:
    """metrics.csv -> {name: [(step, seconds, value), ...]} (a torn last line is skipped)."""
    out: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) != 4 or not row[0].isdigit():
                continue
            try:
                out.setdefault(row[2], []).append((int(row[0]), float(row[1]), float(row[3])))
            except ValueError:
                continue
    return out


# curves.png, one panel each: (title, y label, [(metric, legend label)], log scale)
PANELS = [
    ("returns", "return", [("eval/return_sampled", "eval, sampled actions"),
                           ("eval/return", "eval, most likely action"),
                           ("train/episode_return", "training episodes")], False),
    ("world model losses", "loss", [("loss/world", "total"), ("loss/reward", "reward"),
                                    ("loss/continue", "continue"), ("loss/dyn", "dynamics KL"),
                                    ("loss/rep", "representation KL")], True),
    ("reconstruction losses", "loss", [], True),                   # every loss/recon_<key>
    ("agent losses", "loss", [("loss/actor", "actor"), ("loss/critic", "critic")], False),
    ("policy entropy", "nats", [("agent/entropy", "entropy")], False),
    ("speed", "per wall-clock second", [], False),                 # env steps/s and updates/s
]


def _rate(points: list) -> tuple[list, list]:
    """(step, seconds, count) rows -> (steps, count per wall-clock second between rows)."""
    xs, ys = [], []
    for (s0, t0, c0), (s1, t1, c1) in zip(points, points[1:]):
        if t1 - t0 > 0.5:
            xs.append(s1)
            ys.append((c1 - c0) / (t1 - t0))
    return xs, ys


def plot_curves(metrics: dict, path: str, title: str) -> None:
    """Small multiples of a run's metrics against env steps, written atomically to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure                  # no pyplot: a notebook's backend stays as it is
    fig = Figure(figsize=(13, 6.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for ax, (name, ylabel, series, log) in zip(axes.flat, PANELS):
        if name == "reconstruction losses":
            series = [(k, k.removeprefix("loss/recon_")) for k in sorted(metrics) if k.startswith("loss/recon_")]
        lines = []
        if name == "speed":
            env_rows = sorted({(s, t) for rows in metrics.values() for s, t, _ in rows})
            xs, ys = _rate([(s, t, s) for s, t in env_rows])
            if xs:
                lines.append(ax.plot(xs, ys, label="env steps")[0])
            xs, ys = _rate(metrics.get("train/updates", []))
            if xs:
                lines.append(ax.plot(xs, ys, label="updates")[0])
        for key, label in series:
            rows = [(s, v) for s, _, v in metrics.get(key, []) if math.isfinite(v) and (not log or v > 0)]
            if not rows:
                continue
            xs, ys = zip(*rows)
            style = dict(marker="o", ms=3) if key.startswith("eval/") else dict(lw=1)
            if key == "train/episode_return":
                style = dict(ls="none", marker=".", ms=3, alpha=0.4)
            lines.append(ax.plot(xs, ys, label=label, **style)[0])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if log and lines:
            ax.set_yscale("log")
        if lines:
            ax.legend(fontsize=7, loc="upper right")       # a fixed place: "best" scans every point
        else:
            ax.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.9, wspace=0.28, hspace=0.45)   # tight_layout is slow
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
