"""Self-play actor: steps E envs together with one batched forward pass per step and cuts
fixed-length, overlapping sequences (common/sequence.py) that it pushes to replay.

Shape legend: E envs of this actor, T sequence length, A actions, O observation shape.

Sequences never cross an episode boundary: an episode's last sequence is padded
(mask False) and holds the final observation at index L, so a time-limit truncation
can bootstrap from it. Consecutive sequences of one env start `stride` steps apart.

An env that raises (common/vector_env.py) loses its current episode: the steps of it that
the cutter still holds are dropped, sequences already sent stay (each is complete and ends
with a bootstrap observation, as every non-final sequence does), and the env's next
sequence starts at the rebuilt env's first observation, so no sequence spans an error.
The lost step is not counted as an env step and the lost episode not as an episode.

A sequence holding NaN or inf (an observation, a reward, or the probabilities the policy
gave for them) is dropped on its own, never sent, and counted per kind (common/sequence.py
nonfinite_kinds): the driver reports them and stops a run whose data is mostly bad.
"""

import collections
import time

import numpy as np
import torch

from actors.numpy_policy import policy_layers, policy_probs
from actors.sampling import sample_categorical
from common import envs as envs_lib
from common import waits
from common.config import Config
from common.networks import build_network
from common.ray_metrics import Recorder, in_ray
from common.sequence import SequenceSpec, nonfinite_kinds
from common.vector_env import VectorEnv
from transport.seams import ReplayWriter, WeightSource
from transport.weights import load_numpy_state

# On Ray an actor prints its rate this often to its own log (the dashboard's Actors -> Log view);
# the driver keeps lines that start with RATE_PREFIX off its console (driver/on_ray.py).
RATE_LOG_S = 5.0
RATE_PREFIX = "throughput: "


class SequenceCutter:
    """Per-env rolling buffers [E, T(+1), ...]; emits sequences at episode ends and every T steps."""

    def __init__(self, spec: SequenceSpec, num_envs: int, stride: int, first_obs: np.ndarray):
        self.spec, self.stride, self.E = spec, stride, num_envs
        self.buf = spec.empty(leading=(num_envs,))
        self.fill = np.zeros(num_envs, dtype=np.int64)  # steps stored per env
        self.buf["obs"][:, 0] = first_obs
        self._rows = np.arange(num_envs)

    def add(
        self,
        action,
        reward,
        behaviour,
        terminal,
        truncated,
        version,
        next_obs,
        final_obs,
        lost=None,
    ) -> list[dict]:
        """Record one vector step; `final_obs` [E, *O] replaces next_obs where an episode ended.
        Where `lost` [E] is True the env raised (common/vector_env.py): what the buffer holds of
        its episode is dropped, never emitted, and the env's next sequence starts at next_obs.
        Returns the sequences completed by this step."""
        rows, n, b = self._rows, self.fill, self.buf
        b["action"][rows, n] = action
        b["reward"][rows, n] = reward
        b["behaviour"][rows, n] = behaviour
        b["mask"][rows, n] = True
        b["terminal"][rows, n] = terminal
        b["truncated"][rows, n] = truncated
        b["version"][rows, n] = version
        done = terminal | truncated
        b["obs"][rows, n + 1] = np.where(
            done.reshape((-1,) + (1,) * (next_obs.ndim - 1)), final_obs, next_obs
        )
        n += 1
        for j in np.flatnonzero(lost if lost is not None else []):
            # fill 0 and done False: nothing of it is emitted below
            self._restart(j, next_obs[j])
        out = []
        for j in np.flatnonzero(done | (n == self.spec.length)):
            out.append({k: v[j].copy() for k, v in b.items()})
            if done[j]:
                self._restart(j, next_obs[j])
            else:
                self._shift(j)
        return out

    def _restart(self, j: int, first_obs: np.ndarray) -> None:
        """Empty env j's buffer; its next sequence starts at first_obs."""
        for v in self.buf.values():
            v[j] = 0
        self.buf["obs"][j, 0] = first_obs
        self.fill[j] = 0

    def _shift(self, j: int) -> None:
        """Keep the last T - stride steps of env j (the overlap) at the front."""
        s, T = self.stride, self.spec.length
        for name, v in self.buf.items():
            keep = T + 1 - s if name == "obs" else T - s
            v[j, :keep] = v[j, s : s + keep]
            v[j, keep:] = 0
        self.fill[j] = T - s


class SelfPlayActor:
    """Plain class: build it directly (tests, --in-process) or wrap it with ray.remote."""

    def __init__(
        self,
        cfg: Config,
        index: int,
        spec: SequenceSpec,
        replay: ReplayWriter,
        weights: WeightSource,
    ):
        """spec: the run's sequences (built once by the wiring from the env's description)."""
        torch.set_num_threads(cfg.torch_threads)
        self.cfg, self.index, self.replay, self.weights = cfg, index, replay, weights
        self.net = build_network(cfg.network_spec(spec)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.envs = VectorEnv(cfg.env, cfg.envs_per_actor, owner=f"actor {index}")
        self.env_seed = envs_lib.derive_seed(cfg.seed, "actor", index)
        self.rng = np.random.default_rng(self.env_seed)
        self.obs = self.cutter = None  # set by the first collect (_start_envs)
        self.episode_return = np.zeros(cfg.envs_per_actor)
        self.episode_length = np.zeros(cfg.envs_per_actor, dtype=np.int64)
        self.env_steps = 0
        self.episodes = 0
        self.steps_since_pull = 0
        self.version = -1
        self.metrics = Recorder("actor", index)
        self._reported_pulls = 0
        self._reported_env_errors = 0
        self._reported_stalls = 0
        # (time, env steps, episodes) at the last rate line; None: no rate lines (not on Ray)
        self._rate_mark = (time.monotonic(), 0, 0) if in_ray() else None
        self._load(*weights.wait())

    def __repr__(self) -> str:
        return f"SelfPlayActor({self.index})"

    def _load(self, version: int, arrays) -> None:
        load_numpy_state(self.net, arrays)
        self.numpy_policy = policy_layers(self.net)  # None for conv torsos: torch acts then
        self.version = version

    def _policy(self, obs: np.ndarray) -> np.ndarray:
        """Action probabilities [E, A] of the loaded weights: numpy for MLP torsos
        (actors/numpy_policy.py), torch otherwise."""
        if self.numpy_policy is not None:
            return policy_probs(self.numpy_policy, obs)
        return torch.softmax(self.net.policy_logits(torch.as_tensor(obs)), -1).numpy()

    def _start_envs(self) -> None:
        """Build and reset the envs: in the first collect rather than in __init__, so an env that
        cannot start (EnvFailure) fails a call, which reaches the driver as that error; on Ray a
        failing __init__ reaches it only as a dead actor."""
        self.obs = self.envs.reset(seed=self.env_seed)
        self.cutter = SequenceCutter(
            self.spec, self.cfg.envs_per_actor, self.cfg.sequence_stride, self.obs
        )

    def _maybe_pull(self) -> None:
        if self.steps_since_pull >= self.cfg.weight_pull_every:
            self.weights.request()
            self.steps_since_pull = 0
        got = self.weights.poll()
        if got is not None:
            self._load(*got)

    @torch.no_grad()
    def collect(self, num_steps: int) -> dict:
        """Step all envs until `num_steps` env steps (summed over envs) are done, pushing
        finished sequences to replay; while replay's rate limit holds the actor (the learner
        is behind), wait for room, and return early after waits.ACTOR_HELD_REPORT_S (in-process at once:
        nothing moves while we wait). Returns statistics for logging."""
        start, infer_s = time.perf_counter(), 0.0
        returns, lengths, sent, steps, held_s = [], [], 0, 0, 0.0
        nonfinite = collections.Counter()  # sequences dropped per kind of bad value
        dropped = 0
        E = self.cfg.envs_per_actor
        if self.obs is None:
            self._start_envs()
        while steps < num_steps:
            if not self.replay.has_room():
                t = time.perf_counter()
                room = self.replay.wait_for_room(max(0.0, waits.ACTOR_HELD_REPORT_S - (t - start)))
                held_s += time.perf_counter() - t
                # the learner moved on: look for weights
                self.steps_since_pull = self.cfg.weight_pull_every
                self._maybe_pull()
                if not room:
                    break
                continue
            t = time.perf_counter()
            probs = self._policy(self.obs)
            action = sample_categorical(probs, self.rng)
            infer_s += time.perf_counter() - t
            out = self.envs.step(action)
            for seq in self.cutter.add(
                action,
                out.reward,
                probs,
                out.terminated,
                out.truncated,
                self.version,
                out.obs,
                out.final_obs,
                out.lost,
            ):
                bad = nonfinite_kinds(seq)
                if bad:
                    nonfinite.update(bad)
                    dropped += 1
                    continue
                self.replay.add(seq)
                sent += 1
            self.episode_return += out.reward
            self.episode_length += 1
            # a lost episode is neither logged nor counted
            self.episode_return[out.lost] = 0.0
            self.episode_length[out.lost] = 0
            for j in np.flatnonzero(out.terminated | out.truncated):
                returns.append(float(self.episode_return[j]))
                lengths.append(int(self.episode_length[j]))
                self.episode_return[j] = 0.0
                self.episode_length[j] = 0
                self.episodes += 1
            self.obs = out.obs
            taken = E - int(out.lost.sum())  # a step that raised is not an env step
            steps += taken
            self.env_steps += taken
            self.steps_since_pull += taken
            self._maybe_pull()
        self.replay.flush()
        elapsed = time.perf_counter() - start
        env_errors, self._reported_env_errors = (
            self.envs.errors - self._reported_env_errors,
            self.envs.errors,
        )
        self._record_metrics(
            steps, returns, elapsed, infer_s / max(steps // E, 1), held_s, env_errors
        )
        self._maybe_log_rate()
        self.metrics.inc("nonfinite_sequences", dropped)
        stalls, self._reported_stalls = self.envs.stalls - self._reported_stalls, self.envs.stalls
        return {
            "actor": self.index,
            "env_steps": steps,
            "total_env_steps": self.env_steps,
            "episodes": len(returns),
            "returns": returns,
            "lengths": lengths,
            "sequences": sent,
            "seconds": elapsed,
            "inference_s": infer_s,
            "wait_s": held_s,
            "version": self.version,
            "pulls": self.weights.pulls,
            "env_errors": env_errors,
            "env_stalls": stalls,
            "dropped_sequences": dropped,
            "nonfinite": dict(nonfinite),
        }

    def _maybe_log_rate(self) -> None:
        """Every RATE_LOG_S (checked after each collect call), one line: env steps per second
        since the last line, and what the actor acts with."""
        if self._rate_mark is None:
            return
        now = time.monotonic()
        then, steps, episodes = self._rate_mark
        if now - then < RATE_LOG_S:
            return
        self._rate_mark = (now, self.env_steps, self.episodes)
        print(
            f"{RATE_PREFIX}actor {self.index}: {(self.env_steps - steps) / (now - then):.0f} env "
            f"steps/s over {now - then:.1f} s ({self.env_steps - steps:,} env steps, "
            f"{self.episodes - episodes} episodes; {self.env_steps:,} in all), weights of "
            f"learner step {self.version}",
            flush=True,
        )

    def _record_metrics(
        self,
        steps: int,
        returns: list[float],
        elapsed: float,
        forward_s: float,
        wait_s: float,
        env_errors: int,
    ):
        m = self.metrics
        m.inc("env_errors", env_errors)
        m.inc("env_steps", steps)
        m.inc("episodes", len(returns))
        if returns:
            m.set("episode_return", sum(returns) / len(returns))
        m.set("env_steps_per_s", steps / max(elapsed, 1e-9))
        m.set("inference_ms", 1000.0 * forward_s)
        m.inc("rate_limit_wait_s", wait_s)
        m.inc("weight_pulls", self.weights.pulls - self._reported_pulls)
        self._reported_pulls = self.weights.pulls
        m.set("policy_version", self.version)
