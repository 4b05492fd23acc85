"""Environment factory: gymnasium envs with the wrappers their family needs, space checks
and seed derivation.

`make_env(env_id)` builds one env (common/vector_env.py steps several); `describe` reports
the observation shape and dtype, action count and reward threshold that everything else
(network, sequence schema, codec) is built from. An id may name the module that registers
it, in gymnasium's own form 'module:EnvId' (e.g. 'my_envs:Maze-v0'): the module is imported
first, in every process that makes the env. What an env id gets:

- Atari (ale-py: 'ALE/Pong-v5', 'PongNoFrameskip-v4', ...): the Muesli paper's setting. The
  base env emits every frame (frameskip=1) with sticky actions (repeat_action_probability
  0.25) and the full 18-action set; gymnasium's AtariPreprocessing then applies up to 30
  no-op starts, frame skip 4 (max over the last two frames) and 84x84 greyscale, and
  FrameStackObservation stacks the last 4 frames: observations uint8 [4, 84, 84].
- MinAtar (package `minatar`: 'MinAtar/Breakout-v1', ...): bool [10, 10, C] grids become
  uint8 0/255, so every image is uint8 and the torso's x / 255 maps it back to {0, 1}.
- Anything else: as registered.

Observations: Box of any shape. uint8 stays uint8 (images travel through the codec and
replay as uint8; the network scales them), bool becomes uint8 0/255, any other dtype
float32; a 2-D uint8 image [H, W] gains a channel [H, W, 1]. Discrete, MultiDiscrete and
MultiBinary observations are flattened to float32 (one-hot) vectors. Dict, Tuple and other
structured observations are refused. Actions: Discrete only (a nonzero `start` is shifted
so the agent always picks 0..n-1); continuous Box, MultiDiscrete, MultiBinary, Dict and
Tuple actions are refused. Refusals are EnvError with one line naming the space.
"""

import importlib
import importlib.util
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# check: bench/solve.py --check-policy; watch: evaluate.py (a user's look at a finished run);
# eval, screen and sampled_eval: the driver's greedy evaluations, their screen, and the final
# sampled evaluation, each on env seeds of its own
ROLE_IDS = {
    "actor": 1,
    "eval": 2,
    "learner": 3,
    "check": 4,
    "watch": 5,
    "replay": 6,
    "screen": 7,
    "sampled_eval": 8,
}

# Packages that register env ids on import: (module, pip name). Imported when an id is not
# yet registered, so `--env ALE/Pong-v5` works in every process (actors, learner, driver).
OPTIONAL_ENV_PACKAGES = {"ALE": ("ale_py", "ale-py"), "MinAtar": ("minatar.gym", "minatar")}
ATARI_MAKE_KWARGS = dict(frameskip=1, repeat_action_probability=0.25, full_action_space=True)
ATARI_FRAME_SKIP = 4
ATARI_SCREEN_SIZE = 84
ATARI_FRAME_STACK = 4
ATARI_NOOP_MAX = 30
# the console's frame rate: one agent step shows every ATARI_FRAME_SKIP-th frame
ATARI_NATIVE_FPS = 60


class EnvError(ValueError):
    """Unknown env id, a missing env package, or an unsupported observation / action space."""


@dataclass(frozen=True)
class EnvInfo:
    obs_shape: tuple
    obs_dtype: str  # 'float32' or 'uint8'
    num_actions: int
    solve_return: float | None


def derive_seed(run_seed: int, role: str, index: int = 0) -> int:
    """Independent 31-bit seed for (run seed, role, index), e.g. actor 3 or the evaluator."""
    return int(
        np.random.SeedSequence([run_seed, ROLE_IDS[role], index]).generate_state(1)[0] & 0x7FFFFFFF
    )


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _space_name(space: spaces.Space) -> str:
    """A short one-line name: Box repr prints its bound arrays over many lines."""
    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    name = _one_line(space)
    return name if len(name) <= 160 else name[:157] + "..."


def _register_packages(env_id: str) -> None:
    """Import the optional packages that register env ids, for an id gymnasium does not know.
    A missing package is an EnvError when the id's namespace names it."""
    if env_id in gym.registry:
        return
    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    for prefix, (module, pip_name) in OPTIONAL_ENV_PACKAGES.items():
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            if namespace == prefix:
                raise EnvError(
                    f"--env={env_id!r} needs the package {pip_name!r}, which is not installed: "
                    f"pip install -r requirements-envs.txt"
                ) from None
            continue
        if prefix == "ALE":
            gym.register_envs(loaded)
        elif not any(key.startswith("MinAtar/") for key in gym.registry):
            loaded.register_envs()
        if env_id in gym.registry:
            return


def registered_id(env_id: str) -> str:
    """The registry id of `env_id`. For 'module:EnvId' the module, which registers EnvId when
    imported, is imported first; EnvError if it cannot be."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except Exception as exc:  # the user's module: any error in it is a bad --env
        raise EnvError(
            f"--env={env_id!r}: module {module!r} cannot be imported ({type(exc).__name__}: "
            f"{_one_line(exc)}); allowed: module:EnvId with a module importable from the working "
            "directory or the Python path that registers EnvId"
        ) from None
    return name


def local_module_path(env_id: str) -> Path | None:
    """The file or folder of the top-level package of a 'module:EnvId' module, the part a
    cluster run ships to every node; None for a plain id or an installed module (stdlib or
    site-packages, which every node installs from the requirements)."""
    if ":" not in env_id:
        return None
    spec = importlib.util.find_spec(env_id.split(":", 1)[0].split(".")[0])
    if spec is None:
        return None
    path = Path(
        spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin
    ).resolve()
    installed = [
        Path(sysconfig.get_paths()[key]).resolve()
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
    ]
    return None if any(path.is_relative_to(root) for root in installed) else path


def _spec(env_id: str):
    name = registered_id(env_id)
    _register_packages(name)
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        raise EnvError(f"--env={env_id!r} cannot be made: {_one_line(exc)}") from None


def is_atari(env_id: str) -> bool:
    """True for ids served by ale-py (they get the paper's Atari preprocessing)."""
    return str(_spec(env_id).entry_point).startswith("ale_py")


def _make(env_id: str, **kwargs) -> gym.Env:
    try:
        return gym.make(registered_id(env_id), **kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"--env={env_id!r} cannot be made: {_one_line(exc)}") from None


def _check_actions(env_id: str, env: gym.Env) -> gym.Env:
    space = env.action_space
    if not isinstance(space, spaces.Discrete):
        env.close()
        kind = "continuous " if isinstance(space, spaces.Box) else ""
        raise EnvError(
            f"--env={env_id!r} has {kind}action space {_space_name(space)}; allowed: Discrete "
            "(a finite set of actions)"
        )
    if int(space.start) != 0:
        start = int(space.start)
        env = gym.wrappers.TransformAction(env, lambda a: a + start, spaces.Discrete(int(space.n)))
    return env


def _as_float32(env: gym.Env) -> gym.Env:
    space = env.observation_space
    with np.errstate(over="ignore"):  # float64 bounds beyond float32 become +-inf
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.asarray(obs, np.float32), spaces.Box(low, high, space.shape, np.float32)
    )


def _convert_observations(env_id: str, env: gym.Env) -> gym.Env:
    """Observations as describe() reports them: uint8 images or float32 vectors."""
    space = env.observation_space
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return _as_float32(gym.wrappers.FlattenObservation(env))
    if not isinstance(space, spaces.Box):
        env.close()
        raise EnvError(
            f"--env={env_id!r} has observation space {_space_name(space)}; allowed: Box (vectors or "
            "images), Discrete, MultiDiscrete, MultiBinary"
        )
    if space.dtype == np.bool_:
        uint8_space = spaces.Box(0, 255, space.shape, np.uint8)
        env = gym.wrappers.TransformObservation(
            env, lambda obs: np.asarray(obs, np.uint8) * np.uint8(255), uint8_space
        )
    elif space.dtype not in (np.uint8, np.float32):
        env = _as_float32(env)
    space = env.observation_space
    if space.dtype == np.uint8 and len(space.shape) == 2:
        env = gym.wrappers.ReshapeObservation(env, space.shape + (1,))
    return env


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One env of `env_id` with its family's wrappers (module docstring); EnvError if unsupported.
    render_mode goes to the base env, so env.render() shows its raw screen (for Atari the
    full-colour frame, not the 84x84 grey stack the agent sees)."""
    render = {"render_mode": render_mode} if render_mode else {}
    if is_atari(env_id):
        env = _make(env_id, **ATARI_MAKE_KWARGS, **render)
        try:
            env = gym.wrappers.AtariPreprocessing(
                env,
                noop_max=ATARI_NOOP_MAX,
                frame_skip=ATARI_FRAME_SKIP,
                screen_size=ATARI_SCREEN_SIZE,
                grayscale_obs=True,
                scale_obs=False,
            )
        except gym.error.DependencyNotInstalled:
            env.close()
            raise EnvError(
                f"--env={env_id!r} needs OpenCV for AtariPreprocessing, which is not installed: "
                "pip install -r requirements-envs.txt"
            ) from None
        env = gym.wrappers.FrameStackObservation(env, ATARI_FRAME_STACK)
    else:
        env = _make(env_id, **render)
    return _convert_observations(env_id, _check_actions(env_id, env))


def describe(env_id: str) -> EnvInfo:
    env = make_env(env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    obs_dtype = "uint8" if obs_space.dtype == np.uint8 else "float32"
    return EnvInfo(
        tuple(obs_space.shape), obs_dtype, int(act_space.n), _spec(env_id).reward_threshold
    )


def video_fps(env_id: str, env: gym.Env) -> float:
    """Frames per second at which one rendered frame per agent step plays in real time."""
    if is_atari(env_id):
        return ATARI_NATIVE_FPS / ATARI_FRAME_SKIP
    return float(env.metadata.get("render_fps") or 30)
