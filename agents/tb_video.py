"""Animated GIFs in TensorBoard without moviepy.editor (which moviepy 2 removed).

torch's SummaryWriter.add_video imports moviepy.editor; all it does is encode a GIF and write an
image summary. We encode the GIF with our own video helper and write the summary ourselves.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


def gif_bytes(frames, fps: int = 8) -> bytes:
    from envs import write_video
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip.gif")
        write_video(frames, path, fps=fps)
        with open(path, "rb") as f:
            return f.read()


def add_gif(writer, tag: str, frames, step: int, fps: int = 8) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    h, w = frames[0].shape[:2]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
