"""Videos and pictures a person can read: frames written to .mp4/.gif/.png atomically, labelled
frames (real | imagined | |error| columns, one row per imagined branch, a grid of branches x steps)."""
from __future__ import annotations

import os

import numpy as np

from quatrix_world.files import atomic_path

from .errors import EnvError


PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
                    [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195]], np.uint8)


def channels_to_rgb(x: np.ndarray) -> np.ndarray:
    """An image of C object channels [H, W, C] (MinAtar) -> RGB: each pixel takes the colour of its
    last active channel (>= 128), black where none is."""
    x = np.asarray(x)
    on = x >= 128
    idx = np.where(on.any(-1), x.shape[-1] - 1 - np.argmax(on[..., ::-1], -1), -1)
    rgb = PALETTE[np.maximum(idx, 0) % len(PALETTE)]
    rgb[idx < 0] = 0
    return rgb


def _frames_array(frames) -> list[np.ndarray]:
    if frames is None or len(frames) == 0:
        raise EnvError("write_video got no frames — pass a non-empty list of uint8 HxWx3 frames")
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f.detach().cpu() if hasattr(f, "detach") else f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, -1)
        if f.ndim == 3 and f.shape[-1] not in (1, 3, 4) and f.shape[-1] < min(f.shape[:2]):
            f = channels_to_rgb(f)                  # object channels, not colours
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
    with atomic_path(path) as tmp:
        clip = ImageSequenceClip(frames, fps=fps)
        if ext == ".mp4":
            clip.write_videofile(tmp, fps=fps, codec="libx264", audio=False, logger=None,
                                 ffmpeg_params=["-pix_fmt", "yuv420p"])
        else:
            clip.write_gif(tmp, fps=fps, logger=None)
        clip.close()
    return path


def _upscale(f: np.ndarray, scale: int) -> np.ndarray:
    return f if scale == 1 else np.repeat(np.repeat(f, scale, axis=0), scale, axis=1)


def _caption_row(text, width: int, height: int, xs=None) -> np.ndarray:
    """A dark row of `height` px with `text` (or several texts, each at its x in `xs`) in light grey."""
    row = np.zeros((height, width, 3), np.uint8)
    if not text:
        return row
    texts, xs = ([text], [4]) if isinstance(text, str) else (list(text), list(xs))
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - pillow ships with matplotlib
        return row
    img = Image.fromarray(row)
    try:
        font = ImageFont.load_default(size=max(8, height - 6))
    except TypeError:   # old pillow: fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    for t, x in zip(texts, xs):
        draw.text((x, 2), t, fill=(235, 235, 235), font=font)
    return np.asarray(img)


def labelled(frames: list, caption: str, scale: int = 4, labels=None) -> np.ndarray:
    """Frames of one size side by side (1-px grey separators), nearest-upscaled by `scale`, with a
    caption row below and, with `labels`, a row naming each column above."""
    frames = _frames_array(frames)
    h = frames[0].shape[0]
    sep = np.full((h, 1, 3), 128, np.uint8)
    parts = [p for f in frames for p in (f, sep)][:-1]
    body = _upscale(np.concatenate(parts, axis=1), max(1, int(scale)))
    rows = []
    height = max(14, 3 * scale + 6)
    if labels is not None:
        xs = [4 + i * (frames[0].shape[1] + 1) * scale for i in range(len(labels))]
        rows.append(_caption_row(labels, body.shape[1], height, xs))
    rows += [body, _caption_row(caption, body.shape[1], height)]
    return np.concatenate(rows, axis=0)


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
    out = []
    for i, (r, m) in enumerate(zip(real, imagined)):
        err = np.abs(r.astype(np.int16) - m.astype(np.int16)).astype(np.uint8)
        out.append(labelled([r, m, err], captions[i] if captions else "", scale, labels=["real", "imagined", "|error|"]))
    return out


def _text_width(text: str, height: int) -> int:
    """About how many pixels `text` takes in the caption font of a row `height` px high."""
    return int(len(text) * 0.62 * max(8, height - 6)) + 8


NOTE_WIDTH = "r^ +0.00  sum +00.00"        # the widest note branch_rows keeps room for


def branch_rows(frames: list, title: str | list[str], row_labels: list[str], row_notes: list[str] | None = None,
                scale: int = 4) -> np.ndarray:
    """One video frame: title rows (a str, or a list of lines), then one row per branch — its name
    on the left, its frame (nearest-upscaled by `scale`), and a note (e.g. its predicted reward) on
    the right. Frames with the same sizes, labels and number of title lines have the same size."""
    frames = _frames_array(frames)
    h, w = frames[0].shape[:2]
    cap = max(14, 3 * scale + 6)
    left = max(_text_width(t, cap) for t in row_labels)
    notes = row_notes or [""] * len(frames)
    right = _text_width(NOTE_WIDTH, cap)
    width = left + w * scale + right
    rows = [_caption_row(line, width, cap) for line in ([title] if isinstance(title, str) else title)]
    for f, label, note in zip(frames, row_labels, notes):
        body = _upscale(f, scale)
        label_col = np.zeros((h * scale, left, 3), np.uint8)
        label_col[:cap] = _caption_row(label, left, cap)
        note_col = np.zeros((h * scale, right, 3), np.uint8)
        note_col[:cap] = _caption_row(note, right, cap)
        rows.append(np.concatenate([label_col, body, note_col], axis=1))
        rows.append(np.full((1, width, 3), 128, np.uint8))          # a grey line between branches
    return np.concatenate(rows[:-1], axis=0)


def grid(frames: list[list], col_titles: list[str], row_labels: list[str], title: str = "",
         scale: int = 2) -> np.ndarray:
    """One picture: frames[r][c] in a grid (1-px grey lines), a title, a title per column and a
    label per row; a column may be None in some rows (left dark)."""
    first = next(f for row in frames for f in row if f is not None)
    h, w = _frames_array([first])[0].shape[:2]
    cap = max(14, 3 * scale + 6)
    cw = w * scale + 1
    ch = max(h * scale, cap) + 1                 # a row is as tall as its label, even for tiny frames
    left = max(_text_width(t, cap) for t in row_labels)
    width = left + cw * len(col_titles)
    out = [_caption_row(title, width, cap)] if title else []
    out.append(_caption_row([""] + list(col_titles), width, cap, [0] + [left + 2 + i * cw for i in range(len(col_titles))]))
    for row, label in zip(frames, row_labels):
        line = np.zeros((ch, width, 3), np.uint8)
        line[:cap, :left] = _caption_row(label, left, cap)
        line[ch - 1, left:] = 128                                   # the grey line under the row
        for c, f in enumerate(row):
            x = left + c * cw
            line[:, x + cw - 1] = 128                               # ...and right of each column
            if f is not None:
                line[:h * scale, x:x + cw - 1] = _upscale(_frames_array([f])[0], scale)
        out.append(line)
    return np.concatenate(out, axis=0)


def write_png(image: np.ndarray, path: str) -> str:
    """Write one uint8 HxWx3 picture to `path` (.png), atomically, readable by everyone (0644)."""
    from PIL import Image
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        Image.fromarray(_frames_array([image])[0]).save(tmp, format="PNG")
    return path
