"""envs — data in for Quatrix World: make_env, checks, replay and video.

    from envs import make_env
    env = make_env("MiniGrid-Empty-6x6-v0", seed=0)     # torchrl EnvBase: image uint8 [56,56,3] + mission (its Dict keys)
    td = env.rollout(5)
"""
from .check import check_env, format_report
from .errors import EnvError
from .examples import register_examples
from .make import QuatrixEnv, make_env, render_frame
from .replay import ContiguousWindowSampler, EpisodeReplay, LaneReplay
from .tokenizer import Tokenizer
from .video import side_by_side, write_video

register_examples()

__all__ = ["make_env", "check_env", "format_report", "EnvError", "Tokenizer", "EpisodeReplay", "LaneReplay",
           "ContiguousWindowSampler", "write_video", "side_by_side", "register_examples", "render_frame",
           "QuatrixEnv"]
