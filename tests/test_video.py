"""write_video (.mp4 / .gif, atomic) and side_by_side frames."""
import os

import imageio.v3 as iio
import numpy as np
import pytest

from envs import EnvError, side_by_side, write_video


def frames(n=5, h=21, w=30):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_mp4_roundtrip(tmp_path):
    path = str(tmp_path / "clip.mp4")
    assert write_video(frames(), path, fps=8) == path
    video = iio.imread(path)
    assert video.shape == (5, 22, 30, 3)             # padded to even sizes
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]   # no temp files left behind


def test_gif_roundtrip(tmp_path):
    path = str(tmp_path / "clip.gif")
    write_video(frames(4, 16, 16), path, fps=4)
    assert iio.imread(path).shape[:3] == (4, 16, 16)


def test_video_errors(tmp_path):
    with pytest.raises(EnvError, match="does not exist"):
        write_video(frames(), str(tmp_path / "nope" / "clip.mp4"))
    with pytest.raises(EnvError, match="mp4 or .gif"):
        write_video(frames(), str(tmp_path / "clip.avi"))
    with pytest.raises(EnvError, match="no frames"):
        write_video([], str(tmp_path / "clip.mp4"))


def test_side_by_side():
    real, imag = frames(3, 8, 8), frames(3, 8, 8)[::-1]
    out = side_by_side(real, imag, captions=["t=0 r=0.00 r̂=0.01", "t=1", "t=2"], scale=4)
    assert len(out) == 3
    h, w = out[0].shape[:2]
    top = 18                                                                        # the column-name row
    assert w == (3 * 8 + 2) * 4 and h == top + 8 * 4 + 18 and out[0].dtype == np.uint8
    assert out[0][:top].any()                                                       # "real | imagined | |error|"
    assert np.array_equal(out[0][top:top + 4:4, :32:4], real[0][:1])               # left column = real
    err = np.abs(real[0].astype(int) - imag[0].astype(int)).astype(np.uint8)
    assert np.array_equal(out[0][top:top + 32:4, (18 * 4)::4][:8, :8], err)        # right column = |error|
    assert out[0][top + 32:].any()                                                  # caption drawn
    with pytest.raises(EnvError, match="equal counts"):
        side_by_side(real, imag[:2])
