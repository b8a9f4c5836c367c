"""curves.png: small multiples of the logged metrics, from the first row on, throttled."""
import os

from agents.logger import PANELS, RunLogger, read_metrics


def test_curves_from_the_first_row_then_throttled(tmp_path):
    log = RunLogger(str(tmp_path))
    log.maybe_curves("nothing logged")
    assert not (tmp_path / "curves.png").exists()            # no metrics.csv yet: nothing to draw
    log.scalars({"train/episode_return": 0.5, "loss/world": 3.0, "loss/recon_camera": 2.0}, step=10, seconds=1.0)
    log.maybe_curves("first row")
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = os.stat(png).st_mtime_ns
    log.scalars({"agent/entropy": 1.2, "train/updates": 1}, step=20, seconds=2.0)
    log.maybe_curves("throttled")                             # within curves_every seconds: not redrawn
    assert os.stat(png).st_mtime_ns == first
    log.maybe_curves("forced", force=True)                    # the end of a run redraws
    second = os.stat(png).st_mtime_ns
    assert second != first
    log.maybe_curves("nothing new", force=True)               # ...but only when rows came since
    assert os.stat(png).st_mtime_ns == second
    log.close()
    m = read_metrics(str(tmp_path / "metrics.csv"))
    assert m["loss/recon_camera"] == [(10, 1.0, 2.0)] and m["agent/entropy"] == [(20, 2.0, 1.2)]
    shown = {key for _, _, series, _ in PANELS for key, _ in series}
    assert {"eval/return_sampled", "eval/return", "loss/world", "loss/actor", "loss/critic", "agent/entropy"} <= shown
