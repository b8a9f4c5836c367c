"""Videos: write frames to .mp4/.gif atomically, and build real | imagined | error comparison frames."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .errors import EnvError


def _frames_array(frames) -> list[np.ndarray]:
    if frames is None or len(frames) == 0:
        raise EnvError("write_video got no frames — pass a non-empty list of uint8 HxWx3 frames")
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f.detach().cpu() if hasattr(f, "detach") else f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, -1)
        if f.ndim != 3 or f.shape[-1] not in (1, 3, 4):
            raise EnvError(f"frame {i} has shape {f.shape}; frames must be HxWx3 (or HxWx1 / HxWx4)")
        if f.shape[-1] == 1:
            f = np.repeat(f, 3, -1)
        f = f[..., :3]
        if f.dtype != np.uint8:
            f = np.clip(f * 255.0 if f.dtype.kind == "f" and f.max() <= 1.0 else f, 0, 255).astype(np.uint8)
        out.append(f)
    h, w = out[0].shape[:2]
    for i, f in enumerate(out):
        if f.shape[:2] != (h, w):
            raise EnvError(f"frame {i} is {f.shape[1]}x{f.shape[0]} but frame 0 is {w}x{h} — all frames must match")
    return out


def write_video(frames, path: str, fps: int = 8) -> str:
    """Write uint8 HxWx3 frames to `path` (.mp4 via libx264, or .gif), atomically; returns the path."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".mp4", ".gif"):
        raise EnvError(f"cannot write video '{path}': use a .mp4 or .gif file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise EnvError(f"cannot write video '{path}': directory '{parent}' does not exist — create it first")
    if fps <= 0:
        raise EnvError(f"fps must be positive, got {fps}")
    frames = _frames_array(frames)
    if ext == ".mp4":   # yuv420p needs even sizes
        h, w = frames[0].shape[:2]
        ph, pw = h % 2, w % 2
        if ph or pw:
            frames = [np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") for f in frames]
    from moviepy import ImageSequenceClip
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)              # mkstemp makes 0600; a video is an ordinary file
    try:
        clip = ImageSequenceClip(frames, fps=fps)
        if ext == ".mp4":
            clip.write_videofile(tmp, fps=fps, codec="libx264", audio=False, logger=None,
                                 ffmpeg_params=["-pix_fmt", "yuv420p"])
        else:
            clip.write_gif(tmp, fps=fps, logger=None)
        clip.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _upscale(f: np.ndarray, scale: int) -> np.ndarray:
    return f if scale == 1 else np.repeat(np.repeat(f, scale, axis=0), scale, axis=1)


def _caption_row(text: str, width: int, height: int) -> np.ndarray:
    row = np.zeros((height, width, 3), np.uint8)
    if not text:
        return row
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - pillow ships with matplotlib
        return row
    img = Image.fromarray(row)
    try:
        font = ImageFont.load_default(size=max(8, height - 6))
    except TypeError:   # old pillow: fixed bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((4, 2), text, fill=(235, 235, 235), font=font)
    return np.asarray(img)


def side_by_side(real, imagined, captions=None, scale: int = 4) -> list[np.ndarray]:
    """Frames with columns real | imagined | |error| (nearest-upscaled by `scale`) and a caption row."""
    real, imagined = _frames_array(real), _frames_array(imagined)
    if len(real) != len(imagined):
        raise EnvError(f"side_by_side got {len(real)} real and {len(imagined)} imagined frames — pass equal counts")
    if captions is not None and len(captions) != len(real):
        raise EnvError(f"side_by_side got {len(captions)} captions for {len(real)} frames — one caption per frame")
    if real[0].shape != imagined[0].shape:
        h, w = real[0].shape[:2]   # nearest-resize imagined frames to the real size
        ih, iw = imagined[0].shape[:2]
        ys, xs = (np.arange(h) * ih // h), (np.arange(w) * iw // w)
        imagined = [f[ys][:, xs] for f in imagined]
    scale = max(1, int(scale))
    out = []
    for i, (r, m) in enumerate(zip(real, imagined)):
        err = np.abs(r.astype(np.int16) - m.astype(np.int16)).astype(np.uint8)
        sep = np.full((r.shape[0], 1, 3), 128, np.uint8)
        top = _upscale(np.concatenate([r, sep, m, sep, err], axis=1), scale)
        cap = _caption_row(captions[i] if captions else "", top.shape[1], max(14, 3 * scale + 6))
        out.append(np.concatenate([top, cap], axis=0))
    return out
