"""E envs of one id stepped together, that survive an env raising an exception.

Shape legend: E envs, O observation shape.

`VectorEnv.step(actions)` steps env 0..E-1 in turn and, as gymnasium's SyncVectorEnv with
autoreset_mode SAME_STEP, resets an env within the step its episode ends: `obs` holds the
new episode's first observation and `final_obs` the ended episode's last one. Without
errors the two give the same numbers for the same seed (env j is reset with seed + j).

What an env error costs (any Exception from the env's constructor, reset or step, and an
observation whose shape is not its observation space's):
- in step: that env's transition and the rest of its episode. The env is closed, rebuilt
  and reset; `lost[j]` is True, its reward 0, terminated and truncated False, and `obs[j]`
  is the rebuilt env's first observation. The caller drops whatever it held of that
  episode; nothing of it is joined to the new one.
- in the reset that follows an episode end: nothing of the finished episode is lost (its
  step is reported as usual); the env is rebuilt and `obs[j]` comes from the new one.
- a rebuilt env is reset with a seed derived from (reset seed, j, rebuilds of env j so far).
Every error is counted (`errors`) and the first and every LOG_EVERY-th printed as one line
with the env's own message. A step or reset that takes STALL_S or longer (a simulator or a
server that hangs for a while, then answers) is counted in `stalls` and printed the same way. An env that fails MAX_FAILURES_IN_A_ROW times with no
successful step in between (so: at creation or reset, or at the first step of every new
episode) raises EnvFailure, one line naming the env and its last error.
"""

import time
from typing import NamedTuple

import numpy as np

from common import envs as envs_lib

MAX_FAILURES_IN_A_ROW = 5
STALL_S = 10.0  # one env call this long is a stall: counted and logged (a CartPole step: ~10 us)
LOG_EVERY = 100
MESSAGE_CHARS = 300


class EnvFailure(RuntimeError):
    """An env failed MAX_FAILURES_IN_A_ROW times in a row: the run cannot go on with it."""


class Step(NamedTuple):
    obs: np.ndarray  # [E, *O] observation to act on next
    reward: np.ndarray  # [E] float64
    terminated: np.ndarray  # [E] bool
    truncated: np.ndarray  # [E] bool
    final_obs: np.ndarray  # [E, *O] last observation of an episode that ended; obs elsewhere
    lost: np.ndarray  # [E] bool, the env raised in step: its episode is cut off and dropped


def rebuild_seed(seed: int | None, index: int, rebuilds: int) -> int | None:
    """Reset seed of env `index` after its `rebuilds`-th rebuild (None stays None)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, index, rebuilds]).generate_state(1)[0] & 0x7FFFFFFF)


def _describe_error(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class VectorEnv:
    """`num_envs` envs of `env_id` (common.envs.make_env); `owner` names them in messages.
    watched: one callable env -> env per leading env (env j is watched[j](env), built with
    render_mode='rgb_array'), e.g. a video recorder (evaluate.py)."""

    def __init__(self, env_id: str, num_envs: int, owner: str = "", watched=()):
        if len(watched) > num_envs:
            raise ValueError(f"{len(watched)} watched envs asked for, but only {num_envs} envs")
        self.env_id, self.num_envs, self.owner, self.watched = (
            env_id,
            num_envs,
            owner,
            tuple(watched),
        )
        self.envs = [None] * num_envs
        self.seed = None
        self.rebuilds = np.zeros(num_envs, dtype=np.int64)
        self.failures_in_a_row = np.zeros(num_envs, dtype=np.int64)
        self.errors = 0
        self.stalls = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Build (where needed) and reset every env; env j gets seed + j. Returns obs [E, *O]."""
        self.seed = seed
        first = [self._start(j, None if seed is None else seed + j) for j in range(self.num_envs)]
        return np.stack(first)

    def step(self, actions: np.ndarray) -> Step:
        E = self.num_envs
        obs, reward = [None] * E, np.zeros(E)
        terminated, truncated, lost = np.zeros(E, bool), np.zeros(E, bool), np.zeros(E, bool)
        final = [None] * E
        for j in range(E):
            try:
                called = time.monotonic()
                o, r, term, trunc, _ = self.envs[j].step(actions[j])
                self._timed(j, "step", called)
                o = self._checked(j, o)
            except Exception as exc:  # the env's own error: it costs this episode
                self._count(j, exc, "step")
                lost[j] = True
                obs[j] = final[j] = self._start(j, self._next_seed(j))
                continue
            self.failures_in_a_row[j] = 0
            reward[j], terminated[j], truncated[j] = r, term, trunc
            obs[j] = final[j] = o
            if term or trunc:
                obs[j] = self._reset(j, seed=None)
        return Step(np.stack(obs), reward, terminated, truncated, np.stack(final), lost)

    def close(self) -> None:
        for env in self.envs:
            if env is not None:
                env.close()
        self.envs = [None] * self.num_envs

    # -- one env ------------------------------------------------------------------------
    def _next_seed(self, j: int) -> int | None:
        return rebuild_seed(self.seed, j, int(self.rebuilds[j]))

    def _reset(self, j: int, seed: int | None) -> np.ndarray:
        """Reset env j (the autoreset after an episode end); rebuilt if the reset raises."""
        try:
            called = time.monotonic()
            obs = self.envs[j].reset(seed=seed)[0]
            self._timed(j, "reset", called)
            return self._checked(j, obs)
        except Exception as exc:
            self._count(j, exc, "reset")
            return self._start(j, self._next_seed(j))

    def _start(self, j: int, seed: int | None) -> np.ndarray:
        """(Re)build env j if it is missing or broken and reset it; retried until it works or
        has failed MAX_FAILURES_IN_A_ROW times in a row. Returns its first observation."""
        while True:
            try:
                if self.envs[j] is None:
                    self.envs[j] = self._make(j)
                return self._checked(j, self.envs[j].reset(seed=seed)[0])
            except envs_lib.EnvError:
                raise  # an unsupported id or space: no retry makes it work
            except Exception as exc:
                self._count(j, exc, "creation" if self.envs[j] is None else "reset")
                seed = self._next_seed(j)

    def _checked(self, j: int, obs) -> np.ndarray:
        """obs as an array of the shape env j's observation space promises; an env that breaks
        that promise raises here, inside the env's own try, so it is one env error (np.stack
        of the E observations would fail the whole step, and with it the actor)."""
        obs, shape = np.asarray(obs), self.envs[j].observation_space.shape
        if obs.shape != shape:
            raise ValueError(
                f"observation of shape {obs.shape} does not match its observation space {shape}"
            )
        return obs

    def _make(self, j: int):
        if j < len(self.watched):
            return self.watched[j](envs_lib.make_env(self.env_id, render_mode="rgb_array"))
        return envs_lib.make_env(self.env_id)

    def _timed(self, j: int, where: str, called: float) -> None:
        """Count and log a call of env j that took STALL_S or longer (a stall, not an error: the
        env answered, and its answer is used)."""
        took = time.monotonic() - called
        if took < STALL_S:
            return
        self.stalls += 1
        if self.stalls == 1 or self.stalls % LOG_EVERY == 0:
            who = f"{self.owner}: " if self.owner else ""
            print(
                f"{who}env {j} of {self.env_id} took {took:.1f} s for one {where} (stalled: "
                f">= {STALL_S:g} s); env stall {self.stalls} (logged: the 1st and every "
                f"{LOG_EVERY}th)",
                flush=True,
            )

    def _count(self, j: int, exc: Exception, where: str) -> None:
        """Book an error of env j at `where`, log it, drop the env (rebuilt on next start);
        EnvFailure when it has failed too often in a row."""
        self.errors += 1
        self.failures_in_a_row[j] += 1
        self.rebuilds[j] += 1
        env, self.envs[j] = self.envs[j], None
        if env is not None:
            try:
                env.close()
            # a broken env may not close cleanly; it is dropped anyway
            except Exception:
                pass
        who = f"{self.owner}: " if self.owner else ""
        if self.failures_in_a_row[j] >= MAX_FAILURES_IN_A_ROW:
            raise EnvFailure(
                f"{who}--env={self.env_id!r} failed {MAX_FAILURES_IN_A_ROW} times in a row (env {j}, "
                f"at creation, reset or the first step of an episode); last, at {where}: "
                f"{_describe_error(exc)}"
            )
        if self.errors == 1 or self.errors % LOG_EVERY == 0:
            dropped = ", its episode dropped" if where == "step" else ""
            print(
                f"{who}env {j} of {self.env_id} raised at {where} ({_describe_error(exc)}); env error "
                f"{self.errors}: the env is rebuilt{dropped} (logged: the 1st and every {LOG_EVERY}th)",
                flush=True,
            )
