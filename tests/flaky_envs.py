"""Envs that raise, for the env-error tests (tests/test_env_errors.py). Importing this module
registers them, so `--env tests.flaky_envs:FlakyCartPole-v0` loads them in any process
(gymnasium's module:EnvId form; common/envs.py imports the module first).

- FlakyCartPole-v0: CartPole-v1 whose step raises RuntimeError with probability
  `failure_prob` (default 0.01), drawn from a generator seeded by reset's seed: the same
  seeds give the same failures.
- CountingEnv-v0: a deterministic schedule. Observation [instance, episode, t]: which
  instance of the env (numbered per process from 0), its episode number (from 0) and the
  step within the episode. Every episode terminates after `episode_steps` steps, reward 1;
  step number `fail_at_step` of an instance's life (counted over its episodes, from 1)
  raises, and so does reset number `fail_at_reset` (the first reset is number 1). With
  `nan_obs_at` (`nan_reward_at`) the observation reached at step t = nan_obs_at of every
  episode (the reward of the step that reaches it) is NaN; `wrong_shape_at` gives it shape (2,),
  and so does `wrong_shape_once_at` to the observation of that step of the instance's life.
  Step number `stall_at` of an instance's life sleeps `stall_s` seconds first.
- HugeObsCartPole-v0: CartPole with float64 observations (obs + 10) * 1e39: every value is beyond
  float32's range (3.4e38).
- CountingEnv variants registered under their own ids, so that every process of a Ray run
  (bench/faults.py) builds the same one: NanOneIn1000-v0 (the observation at step 500 of each
  1,000-step episode is NaN), WrongShapeOnce-v0 (the observation of step 150 of each instance's
  life has shape (2,)), WrongShapeEvery100-v0 (so has the one at step 50 of each 100-step
  episode), StallOnce-v0 (step 300 of each instance's life sleeps 12 s).
- ResetFails-v0: CartPole-v1 whose reset always raises RuntimeError.
- ResetFailsOffDriver-v0: CartPole-v1 whose reset raises RuntimeError in every process but
  the one whose pid is in $FLAKY_ENVS_DRIVER_PID: launch.py's start-up check passes in the
  driver, and the actors on Ray give up.
"""

import itertools
import os
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

FLAKY_ID, COUNTING_ID, RESET_FAILS_ID = "FlakyCartPole-v0", "CountingEnv-v0", "ResetFails-v0"
OFF_DRIVER_ID, DRIVER_PID_VAR = "ResetFailsOffDriver-v0", "FLAKY_ENVS_DRIVER_PID"
# CartPole whose reset takes 3 ms: long evaluations, whatever the policy
SLOW_RESET_ID = "SlowResetCartPole-v0"
HUGE_OBS_ID = "HugeObsCartPole-v0"
RESET_FAILURE = "simulator lost its licence server"
_instances = itertools.count()
made = {COUNTING_ID: 0, RESET_FAILS_ID: 0}  # instances built in this process


class FlakyCartPole(CartPoleEnv):
    def __init__(self, failure_prob: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.failure_prob = failure_prob
        self.failures = np.random.default_rng()

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.failures = np.random.default_rng(seed)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.failures.random() < self.failure_prob:
            raise RuntimeError("FlakyCartPole: physics server dropped the connection")
        return super().step(action)


class CountingEnv(gym.Env):
    observation_space = spaces.Box(0, 10**6, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(
        self,
        episode_steps: int = 8,
        fail_at_step: int = 0,
        fail_at_reset: int = 0,
        nan_obs_at: int = 0,
        nan_reward_at: int = 0,
        wrong_shape_at: int = 0,
        wrong_shape_once_at: int = 0,
        stall_at: int = 0,
        stall_s: float = 0.0,
    ):
        self.episode_steps, self.fail_at_step, self.fail_at_reset = (
            episode_steps,
            fail_at_step,
            fail_at_reset,
        )
        self.nan_obs_at, self.nan_reward_at = nan_obs_at, nan_reward_at
        self.wrong_shape_at, self.wrong_shape_once_at = wrong_shape_at, wrong_shape_once_at
        self.stall_at, self.stall_s = stall_at, stall_s
        self.instance = next(_instances)
        made[COUNTING_ID] += 1
        self.resets, self.life_steps, self.episode, self.t = 0, 0, -1, 0

    def _obs(self):
        return np.array([self.instance, self.episode, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        if self.resets == self.fail_at_reset:
            raise RuntimeError(f"CountingEnv {self.instance}: reset {self.resets} failed")
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.life_steps += 1
        if self.life_steps == self.stall_at:
            time.sleep(self.stall_s)
        if self.life_steps == self.fail_at_step:
            raise RuntimeError(f"CountingEnv {self.instance}: step {self.life_steps} failed")
        self.t += 1
        obs, reward = self._obs(), 1.0
        if self.t == self.nan_obs_at:
            obs[0] = np.nan
        if self.t == self.nan_reward_at:
            reward = float("nan")
        if self.t == self.wrong_shape_at or self.life_steps == self.wrong_shape_once_at:
            obs = obs[:2]
        return obs, reward, self.t >= self.episode_steps, False, {}


class ResetFails(CartPoleEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        made[RESET_FAILS_ID] += 1

    def reset(self, *, seed=None, options=None):
        raise RuntimeError(RESET_FAILURE)


class ResetFailsOffDriver(CartPoleEnv):
    def reset(self, *, seed=None, options=None):
        if os.environ.get(DRIVER_PID_VAR) != str(os.getpid()):
            raise RuntimeError(f"{RESET_FAILURE} (pid {os.getpid()})")
        return super().reset(seed=seed, options=options)


class HugeObsCartPole(CartPoleEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        high = np.full(4, np.finfo(np.float64).max)
        self.observation_space = spaces.Box(-high, high, (4,), np.float64)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return (obs.astype(np.float64) + 10) * 1e39, info

    def step(self, action):
        obs, *rest = super().step(action)
        return ((obs.astype(np.float64) + 10) * 1e39, *rest)


class SlowResetCartPole(CartPoleEnv):
    def reset(self, *, seed=None, options=None):
        time.sleep(0.003)
        return super().reset(seed=seed, options=options)


PROBE_VARIANTS = {
    "NanOneIn1000-v0": dict(episode_steps=1000, nan_obs_at=500),
    "WrongShapeOnce-v0": dict(episode_steps=100, wrong_shape_once_at=150),
    "WrongShapeEvery100-v0": dict(episode_steps=100, wrong_shape_at=50),
    "StallOnce-v0": dict(episode_steps=100, stall_at=300, stall_s=12.0),
}
for env_id, kwargs in PROBE_VARIANTS.items():
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=CountingEnv, kwargs=kwargs)

for env_id, entry_point, limit in (
    (FLAKY_ID, FlakyCartPole, 500),
    (COUNTING_ID, CountingEnv, None),
    (RESET_FAILS_ID, ResetFails, 500),
    (OFF_DRIVER_ID, ResetFailsOffDriver, 500),
    (SLOW_RESET_ID, SlowResetCartPole, 500),
    (HUGE_OBS_ID, HugeObsCartPole, 500),
):
    if env_id not in gym.registry:
        gym.register(
            env_id, entry_point=entry_point, max_episode_steps=limit, reward_threshold=475.0
        )
