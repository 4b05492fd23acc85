"""Environment factory: vectorised gymnasium envs, space checks and seed derivation."""
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np

ROLE_IDS = {"actor": 1, "eval": 2, "learner": 3}


class EnvError(ValueError):
    """Unknown env id or an unsupported observation / action space."""


@dataclass(frozen=True)
class EnvInfo:
    obs_shape: tuple
    obs_dtype: str          # 'float32' or 'uint8'
    num_actions: int
    solve_return: Optional[float]


def derive_seed(run_seed: int, role: str, index: int = 0) -> int:
    """Independent 31-bit seed for (run seed, role, index), e.g. actor 3 or the evaluator."""
    return int(np.random.SeedSequence([run_seed, ROLE_IDS[role], index]).generate_state(1)[0] & 0x7FFFFFFF)


def _make(env_id: str, **kwargs):
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"--env={env_id!r} cannot be made: {exc}") from None


def describe(env_id: str) -> EnvInfo:
    env = _make(env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise EnvError(f"--env={env_id!r} has action space {act_space}; only Discrete action spaces are supported")
    if not isinstance(obs_space, gym.spaces.Box):
        raise EnvError(f"--env={env_id!r} has observation space {obs_space}; only Box observations are supported")
    obs_dtype = "uint8" if obs_space.dtype == np.uint8 else "float32"
    spec = gym.spec(env_id)
    return EnvInfo(tuple(obs_space.shape), obs_dtype, int(act_space.n), spec.reward_threshold)


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """Synchronous vector env whose finished sub-envs reset within the same step: the
    returned observation is the new episode's first one and info['final_obs'] holds the last."""
    _make(env_id).close()  # clear error for unknown ids before the vector wrapper hides it
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
