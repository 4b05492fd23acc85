"""Video of an episode as it is played: a gymnasium wrapper that writes its env's first
episode to an MP4 file (H.264, through imageio and the ffmpeg binary of imageio-ffmpeg:
pip install -r requirements-video.txt).

Frames come from env.render() (render_mode='rgb_array'): one after reset and one after every
step, so an episode of L steps gives L + 1 frames. The file is written to `<name>.tmp.mp4`
while the episode runs and renamed to its final name when the episode ends; an episode that
never ends (closed early, or reset before its end) leaves no file.
"""

import importlib.util
import math
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

MIN_VIDEO_SIDE = 160  # smaller screens (MinAtar's 10x10) are scaled up by a whole factor
VIDEO_PACKAGES = ("imageio", "imageio_ffmpeg")


def missing_video_packages() -> list:
    """Names of the packages that writing MP4 needs and this Python lacks."""
    return [name for name in VIDEO_PACKAGES if importlib.util.find_spec(name) is None]


def video_frame(frame: np.ndarray) -> np.ndarray:
    """A rendered frame as uint8 RGB [H', W', 3] for the encoder.

    Floats are read as intensities in [0, 1] (MinAtar) and become round(255 x); a frame
    whose short side is below MIN_VIDEO_SIDE is repeated k = ceil(MIN_VIDEO_SIDE / short side)
    times along both axes (nearest neighbour, so cells stay sharp)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a rendered frame must be RGB [H, W, 3], got shape {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    k = math.ceil(MIN_VIDEO_SIDE / min(frame.shape[:2]))
    if k > 1:
        frame = frame.repeat(k, axis=0).repeat(k, axis=1)
    return frame


class EpisodeVideo(gym.Wrapper):
    """Records the first episode of `env` (built with render_mode='rgb_array') to `path`.

    After the episode, `frames` holds the number of frames written and `written` the path."""

    def __init__(self, env: gym.Env, path: Path, fps: float):
        super().__init__(env)
        # pygame (CartPole, LunarLander) draws off-screen in rgb_array mode; without a display
        # SDL would still look for one and print an error line
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(self.path.stem + ".tmp" + self.path.suffix)
        self.writer = None
        self.frames = 0
        self.written: Path | None = None

    def _add_frame(self) -> None:
        with warnings.catch_warnings():
            # gymnasium's env checker warns once about a missing render_fps or float frames
            # (MinAtar); the fps is given here and video_frame converts the floats
            warnings.simplefilter("ignore", UserWarning)
            frame = self.env.render()
        self.writer.append_data(video_frame(frame))
        self.frames += 1

    def _discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.tmp.unlink(missing_ok=True)
            self.frames = 0

    def reset(self, **kwargs):
        self._discard()  # a reset before the episode ended: that video is dropped
        obs, info = self.env.reset(**kwargs)
        if self.written is None:
            import imageio.v2 as imageio

            self.path.parent.mkdir(parents=True, exist_ok=True)
            # macro_block_size 2: H.264 in yuv420p needs even sides; Atari's 210x160 stays unscaled
            self.writer = imageio.get_writer(
                self.tmp, format="FFMPEG", fps=self.fps, codec="libx264", macro_block_size=2
            )
            self._add_frame()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.writer is not None:
            self._add_frame()
            if terminated or truncated:
                self.writer.close()
                self.writer = None
                os.replace(self.tmp, self.path)
                self.written = self.path
        return obs, reward, terminated, truncated, info

    def close(self):
        self._discard()
        super().close()
