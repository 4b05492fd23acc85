"""Train Muesli: `python launch.py [--preset NAME] [--field-name VALUE ...]`.

Builds the plain components (weight store, replay shards, learner, self-play actors),
wraps them with ray.remote (local Ray by default, `--address` joins a cluster) or runs
them in this process (`--in-process`), drives training until a separate greedy
evaluation reaches the solve threshold or a budget runs out, and writes a run
directory: config.json, metrics.jsonl, tensorboard/, checkpoints/, learning_curve.png
and policy.pt2 (torch.export; load with torch.export.load, no project code needed).

Bad input fails before Ray starts or anything is written (exit 2, one line). The first
Ctrl-C stops the run as a budget would (final checkpoint, policy, summary); a second one
stops it at once. A run that fails after start-up still writes summary.json, with the error.
"""
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import torch

from actors.actor import SelfPlayActor
from actors.evaluate import evaluate
from actors.params import WeightClient, WeightPublisher, load_numpy_state
from common.weight_store import WeightStore
from common import envs as envs_lib
from common import placement, preflight
from common.config import Config, ConfigError, parse_config, to_dict
from common.metrics import RunLogger
from common.networks import build_network
from common.sequence import SequenceSpec
from common.vector_env import EnvFailure, VectorEnv
from learner import checkpoint
from learner.learner import Learner
from replay.client import ReplayClient, split
from replay.rate_limit import SampleToInsertRatio, shard_minimum
from replay.shard import ReplayShard

LEARNER_CALL_STEPS = 50      # updates per learner call before it reports back
PROJECT_ROOT = Path(__file__).resolve().parent


def cluster_runtime_env(cfg: Config) -> dict:
    """Ray runtime_env for a cluster run: this project's code as the working directory of every
    component process on every node (Ray uploads it once, honouring .gitignore), so a node needs
    only the installed requirements. Run output stays with the driver and is never uploaded. The
    module of a `--env module:EnvId` travels too (py_modules) unless it is installed."""
    if not cfg.ship_code:
        return {}
    runtime_env = {"working_dir": str(PROJECT_ROOT),
                   "excludes": ["/.git/", "/runs/", "/docs/", "/docker/", "/tests/", "*.pt", "*.pt2", "*.png"]}
    env_module = envs_lib.local_module_path(cfg.env)
    if env_module is not None:
        runtime_env["py_modules"] = [str(env_module)]
    return runtime_env


def make_run_dir(cfg: Config) -> Path:
    """A new run directory (or an empty one), or the one being resumed; config.json,
    written atomically, holds the config in use. Call only once every check has passed."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
    else:
        name = cfg.run_name or f"{cfg.env.replace('/', '_').replace(':', '_')}-{cfg.preset}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(cfg.run_root) / name
        try:
            run_dir.mkdir(parents=True, exist_ok=True)       # preflight refused an existing run
        except OSError as exc:
            raise ConfigError(f"--run-root={cfg.run_root!r} is invalid: cannot create {run_dir} "
                              f"({exc.strerror or type(exc).__name__}); allowed: a writable folder") from None
    checkpoint.write_atomic(run_dir / "config.json", (json.dumps(to_dict(cfg), indent=2) + "\n").encode())
    return run_dir


def shard_rate_limit(cfg: Config):
    """Each shard's share of the pacing (replay/rate_limit.py): the replay ratio, its share of the
    minimum to sample (at least its share of a batch), and an error buffer of the samples of its
    share of --replay-error-buffer sequences, so actors run at most about that many sequences ahead
    of the learner or behind it; never less than a whole batch, the most one shard is asked for at
    once, so actors and learner are never both held."""
    if not cfg.replay_ratio:
        return None
    per_shard = shard_minimum(cfg.min_replay, cfg.batch_size, cfg.num_replay_shards)
    buffer = cfg.replay_ratio * math.ceil(cfg.replay_error_buffer / cfg.num_replay_shards)
    return SampleToInsertRatio(cfg.replay_ratio, per_shard, max(buffer, cfg.batch_size))


def remote_classes(cfg: Config, plan: placement.Placement) -> dict:
    """The component classes wrapped with ray.remote as `plan` places them: {plain class: Ray actor class}.

    Actors and shards come back after a crash or a lost node (Ray re-runs __init__: a shard
    restarts empty, an actor resumes with the newest weights). The store also restarts if its
    node leaves: it is empty until the learner's next publish.
    Without --task-events no call is recorded in Ray's task list: the GCS would keep a record of
    each of the thousands of calls a minute, and its memory grew ~10 MB/min (docs/soak.md)."""
    import ray
    restart = dict(max_restarts=cfg.max_restarts)
    events = dict(enable_task_events=cfg.task_events)
    return {
        WeightStore: ray.remote(**plan.store, max_restarts=-1, **events)(WeightStore),
        ReplayShard: ray.remote(**plan.shard, **restart, **events)(ReplayShard),
        Learner: ray.remote(**plan.learner, **events)(Learner),
        SelfPlayActor: ray.remote(**plan.actor, **restart, **events)(SelfPlayActor),
    }


class Components:
    """The system's parts, either plain objects or Ray actor handles (`remote`)."""

    def __init__(self, cfg: Config, info: envs_lib.EnvInfo, remote: bool, checkpoint_data: bytes = None):
        """checkpoint_data: learner checkpoint to resume from, loaded before the actors start
        (so they pace themselves from the restored version); its run_state is kept in
        `self.run_state`."""
        self.remote = remote
        self.spec = spec = SequenceSpec(cfg.sequence_length, info.obs_shape, info.obs_dtype, info.num_actions)
        if remote:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
            group = ray.util.get_current_placement_group()
            if group is None:
                total, free = ray.cluster_resources(), ray.available_resources()
                plan = placement.plan(cfg, total.get("CPU", 1.0), free.get("CPU", 0.0), free.get("GPU", 0.0))
                # The store prefers the driver's node (soft: it restarts elsewhere if that node leaves).
                here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
                self.plan = dataclasses.replace(plan, store={**plan.store, "scheduling_strategy": here})
            else:   # a Ray Tune trial (sweep.py): the bundles of its placement group after its own first one
                bundles = group.bundle_specs[1:]
                cpus, gpus = (sum(b.get(kind, 0.0) for b in bundles) for kind in ("CPU", "GPU"))
                self.plan = placement.inside(placement.plan(cfg, cpus, cpus, gpus), PlacementGroupSchedulingStrategy(group))
            self.make = remote_classes(cfg, self.plan)
            new = lambda cls, *args: self.make[cls].remote(*args)  # noqa: E731
            num_actors = self.plan.num_actors
        else:
            self.plan = None
            new = lambda cls, *args: cls(*args)  # noqa: E731
            num_actors = placement.in_process_actors(cfg)
        self.cfg = cfg = dataclasses.replace(cfg, num_actors=num_actors)
        self.store = new(WeightStore)
        capacities = split(cfg.replay_capacity, cfg.num_replay_shards)
        limit = shard_rate_limit(cfg)
        self.shards = [new(ReplayShard, spec, capacities[i], envs_lib.derive_seed(cfg.seed, "replay", i), i, limit)
                       for i in range(cfg.num_replay_shards)]
        self.learner = new(Learner, cfg, ReplayClient(self.shards, spec, remote), WeightPublisher(self.store, remote))
        self.run_state = self.call(self.learner, "load_checkpoint_bytes", checkpoint_data) if checkpoint_data else {}
        self.new = new
        self.actors = [self.new_actor(i) for i in range(cfg.num_actors)]
        self.weights = WeightClient(self.store, remote)

    def new_actor(self, index: int):
        return self.new(SelfPlayActor, self.cfg, index, ReplayClient(self.shards, self.spec, self.remote),
                        WeightClient(self.store, self.remote))

    def replace_actor(self, index: int):
        """A fresh actor in place of one that keeps failing (restarts used up or stuck)."""
        import ray
        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self.new_actor(index)
        return self.actors[index]

    def call(self, handle, method: str, *args):
        """Blocking call on a component, plain or remote."""
        if self.remote:
            import ray
            return ray.get(getattr(handle, method).remote(*args))
        return getattr(handle, method)(*args)

    def node_map(self) -> dict:
        """Where the components run: {node_id: {"ip", "learner", "actors", "shards"}} with Ray (counts per
        node), {} in-process. Asks each Ray actor for its node id, so it needs no dashboard."""
        if not self.remote:
            return {}
        import ray
        where = lambda _self: ray.get_runtime_context().get_node_id()  # noqa: E731
        roles = [("learner", self.learner)] + [("actors", a) for a in self.actors] + [("shards", s) for s in self.shards]
        node_ids = ray.get([handle.__ray_call__.remote(where) for _, handle in roles])
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        out = {}
        for (role, _), node_id in zip(roles, node_ids):
            node = out.setdefault(node_id, {"ip": ips.get(node_id, "?"), "learner": 0, "actors": 0, "shards": 0})
            node[role] += 1
        return out


class Trainer:
    """Drives the components and decides when to evaluate, checkpoint and stop."""

    def __init__(self, cfg: Config, info: envs_lib.EnvInfo, run_dir: Path, resume: preflight.ResumePoint = None):
        """resume: the checkpoint to continue from (preflight.check_resume), for --resume."""
        self.cfg, self.info, self.run_dir, self.resume = cfg, info, run_dir, resume
        self.solve_return = cfg.solve_return if cfg.solve_return is not None else info.solve_return
        self.log = RunLogger(run_dir, json.dumps(to_dict(cfg), indent=2), resume_at=resume and resume.env_steps)
        self.eval_seed = envs_lib.derive_seed(cfg.seed, "eval")
        self.screen_seed = envs_lib.derive_seed(cfg.seed, "screen")   # bench/peers/harness.py screens on the same seeds
        self.last_eval = -math.inf      # env steps at the last evaluation
        self.latest = None              # (network, version) of the newest weights fetched
        self.evaluation = None          # ((network, version, env steps), future): running on eval_thread (Ray runs)
        self.eval_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evaluate")
        self.solved_net = None          # the network whose evaluation solved the run
        self.first_env_step_s = None    # seconds from the start to the first chunk of env steps
        self.last_checkpoint = time.monotonic()
        self.best_eval = -math.inf
        self.solved_at = None
        self.components = None
        self.nodes = {}                 # node_map() of a Ray run, for summary.json
        self.learner_steps = 0
        self.resumed_from = None        # checkpoint path when --resume
        self.stop_request = ""          # a stop reason from outside the loop (Ctrl-C: "interrupted")
        self.faults = collections.Counter()     # actor_failures, actors_replaced, ... (summary.json)
        self._failing = collections.Counter()   # consecutive failed calls per actor index
        self._died = collections.Counter()      # consecutive ActorDiedErrors per actor index

    # -- building and resuming -------------------------------------------------------------
    def build(self, remote: bool) -> "Components":
        if self.resume is not None:
            for error in self.resume.errors:
                print(f"resume: skipped {error}", flush=True)
            for path in self.resume.newer:      # unreadable: renamed, so new checkpoints neither collide nor get pruned
                print(f"resume: renamed {path.name} to {checkpoint.set_aside(path).name}", flush=True)
            self.resumed_from = str(self.resume.path)
            print(f"resume: continuing from {self.resume.path}", flush=True)
        self.components = Components(self.cfg, self.info, remote, self.resume and self.resume.data)
        if self.resume is not None:
            self.restore(self.components.run_state)
        return self.components

    def restore(self, run_state: dict) -> None:
        self.log.restore(int(run_state.get("env_steps", 0)), int(run_state.get("episodes", 0)),
                         float(run_state.get("seconds", 0.0)))
        self.best_eval = float(run_state.get("best_eval", -math.inf))
        self.learner_steps = int(run_state.get("learner_steps", 0))

    def run_state(self) -> dict:
        """The driver's bookkeeping stored in each checkpoint (plain numbers)."""
        return {"env_steps": self.log.env_steps, "episodes": self.log.episodes, "seconds": self.log.elapsed(),
                "best_eval": self.best_eval, "learner_steps": self.learner_steps}

    # -- shared bookkeeping -------------------------------------------------------------
    def on_actor(self, stats: dict) -> None:
        if self.first_env_step_s is None and stats["env_steps"]:
            self.first_env_step_s = self.log.elapsed() - stats["seconds"]    # when this first chunk began
        self.log.actor(stats)
        if stats["env_errors"]:
            self.faults["env_errors"] += stats["env_errors"]
            self.log.scalars({"faults/env_errors": self.faults["env_errors"]})

    def on_learner(self, metrics: dict) -> None:
        """A learner.train report; of one that made no update (data or throttle held it back)
        only the replay fault counters are kept (the summary reports them)."""
        if not metrics.get("learner/updates_in_call"):
            self.log.latest.update({k: v for k, v in metrics.items() if k in ("replay/failed_calls", "replay/lost_sequences")})
            return
        self.learner_steps = int(metrics.get("learner/steps", self.learner_steps))
        # The lag in env steps: learner steps behind, at the run's env steps per learner step.
        per_step = self.log.env_steps / max(self.learner_steps, 1)
        self.log.scalars({**metrics, "learner/policy_lag_env_steps": metrics.get("learner/policy_lag", 0.0) * per_step})

    def on_actor_failure(self, index: int, exc: Exception) -> float:
        """Account for a failed actor call; returns seconds to wait before calling it again.

        The first failure after a success is one fault: the chunk in flight (at most
        actor_chunk_steps env steps) is lost, and the line is printed once. While Ray restarts
        the actor its calls fail fast as unavailable (retried every second); an actor that is
        dead for good (ActorDiedError twice in a row: restarts used up) is replaced."""
        import ray
        if not self._failing[index]:
            self.faults["actor_failures"] += 1
            self.faults["chunks_lost"] += 1
            print(f"actor {index} failed ({type(exc).__name__}); its chunk of <= {self.cfg.actor_chunk_steps} "
                  "env steps is lost; retrying while Ray restarts it", flush=True)
            self.log.scalars({f"faults/{key}": value for key, value in self.faults.items()})
        self._failing[index] += 1
        if isinstance(exc, ray.exceptions.ActorDiedError):
            self._died[index] += 1
            if self._died[index] >= 2:
                print(f"actor {index} is dead for good; starting a new one", flush=True)
                self.components.replace_actor(index)
                self.faults["actors_replaced"] += 1
                self._died[index] = 0
                return 0.0
        return 1.0

    def _snapshot(self) -> tuple:
        """(network with the newest published weights, its version, env steps now): what an
        evaluation judges, kept as it is while training goes on."""
        weights = self.components.weights
        got = weights.newest()          # not poll(): on Ray its answer would come only by the next evaluation
        if got is None and self.latest is None:
            got = weights.wait()
        if got is not None:
            net = build_network(self.cfg.network_spec(self.info)).eval()
            load_numpy_state(net, got[1])
            self.latest = (net, got[0])
        return (*self.latest, self.log.env_steps)

    def _judge(self, net, full_only: bool = False) -> tuple:
        """Greedy returns of net: a cheap screen on its own seeds first (unless full_only), then
        the full evaluation only if the screen reaches the bar. Returns (screen returns or None,
        full returns or None)."""
        screen = None
        n_screen = min(self.cfg.eval_screen_episodes, self.cfg.eval_episodes)
        if not full_only and self.solve_return is not None and n_screen < self.cfg.eval_episodes:
            screen = evaluate(net, self.cfg.env, n_screen, self.screen_seed, greedy=True)
            if screen.mean() < self.solve_return:
                return screen, None
        return screen, evaluate(net, self.cfg.env, self.cfg.eval_episodes, self.eval_seed, greedy=True)

    def _judged(self, net, version: int, env_steps: int, screen, full) -> None:
        """Log an evaluation of the weights as of env_steps; the first that reaches the bar solves
        the run, and its network is the one exported."""
        if screen is not None:
            self.log.scalars({"eval/screen_return": float(screen.mean())}, env_steps)
        if full is None:
            return
        self.log.evaluation(full, env_steps=env_steps)
        mean = float(full.mean())
        self.best_eval = max(self.best_eval, mean)
        if self.solve_return is not None and mean >= self.solve_return and self.solved_at is None:
            self.solved_at = dict(seconds=self.log.elapsed(), env_steps=env_steps, version=version,
                                  eval_mean=mean, eval_std=float(full.std()))
            self.solved_net = net

    def maybe_evaluate(self) -> None:
        """Every eval_every_env_steps (once training returns reach eval_min_train_return) judge a
        snapshot of the newest weights. On Ray on a driver thread, so the driver keeps feeding
        actors and learner meanwhile; one evaluation at a time; in-process inline."""
        if self.evaluation is not None:
            if not self.evaluation[1].done():
                return
            self._take_evaluation()
        due = self.log.env_steps - self.last_eval >= self.cfg.eval_every_env_steps
        warm = not (self.log.recent_return() < self.cfg.eval_min_train_return)
        if not (due and warm):
            return
        self.last_eval = self.log.env_steps
        net, version, env_steps = self._snapshot()
        if self.components.remote:
            self.evaluation = ((net, version, env_steps), self.eval_thread.submit(self._judge, net))
        else:
            self._judged(net, version, env_steps, *self._judge(net))

    def _take_evaluation(self) -> None:
        """Log the evaluation from eval_thread (waiting for it if it still runs)."""
        (snapshot, job), self.evaluation = self.evaluation, None
        self._judged(*snapshot, *job.result())

    def should_stop(self) -> str:
        if self.stop_request:
            return self.stop_request
        if self.solved_at is not None:
            return "solved"
        if self.log.env_steps >= self.cfg.max_env_steps:
            return "env step budget spent"
        if self.log.elapsed() >= self.cfg.max_seconds:
            return "time budget spent"
        return ""

    def maybe_checkpoint(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_checkpoint < self.cfg.checkpoint_every_s:
            return
        self.last_checkpoint = time.monotonic()
        data = self.components.call(self.components.learner, "checkpoint_bytes", self.run_state())
        step = int(checkpoint.contents(data)["steps"])     # the learner's own step: the driver's may lag
        checkpoint.save(self.run_dir / "checkpoints", step, data, self.cfg.keep_checkpoints)

    # -- the two drivers ----------------------------------------------------------------
    def run_in_process(self) -> str:
        c = self.build(remote=False)
        while True:
            for actor in c.actors:
                self.on_actor(actor.collect(self.cfg.actor_chunk_steps))
            self.on_learner(c.learner.train(10**9, wait_s=0.0))   # as many updates as replay allows
            self.log.progress()
            self.maybe_evaluate()
            self.maybe_checkpoint()
            reason = self.should_stop()
            if reason:
                return reason

    def run_on_ray(self) -> str:
        import ray
        c = self.build(remote=True)
        self.nodes = c.node_map()
        print(format_placement(c.plan, self.nodes), flush=True)
        chunk = self.cfg.actor_chunk_steps
        pending = {a.collect.remote(chunk): i for i, a in enumerate(c.actors)}   # ref -> actor index
        retry_at = {}                                                               # actor index -> time
        learner_call = c.learner.train.remote(LEARNER_CALL_STEPS, 0.5)
        reason = ""
        while not reason:
            for index, when in list(retry_at.items()):
                if time.monotonic() >= when:
                    del retry_at[index]
                    pending[c.actors[index].collect.remote(chunk)] = index
            # Wait for anything, then take everything that is ready in one pass, so the
            # learner's report is never queued behind a stream of fast actor chunks.
            refs = [learner_call] + list(pending)
            ray.wait(refs, num_returns=1, timeout=0.5)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref == learner_call:
                    self.on_learner(ray.get(ref))
                    learner_call = c.learner.train.remote(LEARNER_CALL_STEPS, 0.5)
                    continue
                index = pending.pop(ref)
                try:
                    stats = ray.get(ref)
                except ray.exceptions.RayActorError as exc:     # died, restarting, or its node left
                    retry_at[index] = time.monotonic() + self.on_actor_failure(index, exc)
                    continue
                except EnvFailure as exc:       # RayTaskError(EnvFailure): its text holds the remote traceback
                    raise exc.cause from None
                self._failing[index] = self._died[index] = 0
                self.on_actor(stats)
                pending[c.actors[index].collect.remote(chunk)] = index
            self.log.progress()
            self.maybe_evaluate()
            self.maybe_checkpoint()
            reason = self.should_stop()
        done, _ = ray.wait([learner_call], timeout=0)     # a last report that has arrived counts; none is waited for
        if done:
            self.on_learner(ray.get(learner_call))
        return reason

    # -- the end --------------------------------------------------------------------------
    def finish(self, reason: str) -> dict:
        """Final checkpoint; the evaluation still running is waited for; a run that did not solve
        gets a last full greedy evaluation of its newest weights. The exported policy and the
        summary are those of the weights that solved (else the newest), and their cheap sampled
        evaluation (--sampled-eval-episodes)."""
        train_seconds = self.log.elapsed()
        finish_start = time.monotonic()
        self.log.progress(force=True)
        self.maybe_checkpoint(force=True)
        if self.evaluation is not None:
            self._take_evaluation()
        self.eval_thread.shutdown()
        if self.solved_at is None:
            net, version, env_steps = self._snapshot()
            self._judged(net, version, env_steps, *self._judge(net, full_only=True))
        policy = self.solved_net or self.latest[0]
        sampled = evaluate(policy, self.cfg.env, self.cfg.sampled_eval_episodes, self.eval_seed + 1, greedy=False)
        self.log.evaluation(sampled, greedy=False)
        export_policy(policy, self.info, self.run_dir / "policy.pt2")
        self.log.plot(self.run_dir / "learning_curve.png", f"Muesli {self.cfg.env} ({self.cfg.preset}, seed {self.cfg.seed})")
        last_greedy = self.log.evals[-1][2] if self.log.evals else float("nan")
        summary = self.summary(reason, train_seconds)
        summary.update({
            "greedy_eval_mean": self.solved_at["eval_mean"] if self.solved_at else last_greedy,
            "sampled_eval_mean": float(sampled.mean()), "solved_at": self.solved_at,
            "num_actors": self.components.cfg.num_actors, "nodes": self.nodes,
            "timing": {"first_env_step_s": self.first_env_step_s, "finish_s": round(time.monotonic() - finish_start, 2)},
        })
        self.write_summary(summary)
        return summary

    def summary(self, reason: str, seconds: float) -> dict:
        """What summary.json holds for any run, finished or failed."""
        return {
            "env": self.cfg.env, "preset": self.cfg.preset, "seed": self.cfg.seed, "stop_reason": reason,
            "solved": self.solved_at is not None, "seconds": round(seconds, 1), "env_steps": self.log.env_steps,
            "episodes": self.log.episodes, "learner_steps": int(self.log.latest.get("learner/steps", 0)),
            "run_dir": str(self.run_dir),
            "faults": dict(self.faults, env_errors=self.faults["env_errors"], replay_failed_calls=int(self.log.latest.get("replay/failed_calls", 0)),
                           replay_sequences_lost=int(self.log.latest.get("replay/lost_sequences", 0))),
            "resumed_from": self.resumed_from,
        }

    def write_summary(self, summary: dict) -> None:
        checkpoint.write_atomic(self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        self.log.close()

    def fail(self, reason: str, error: str) -> dict:
        """summary.json of a run that failed after start-up: why it stopped and the newest
        checkpoint to resume from (nothing else is attempted: the failed part may hang)."""
        newest = checkpoint.list_checkpoints(self.run_dir / "checkpoints")
        summary = {**self.summary(reason, self.log.elapsed()), "error": error,
                   "checkpoint": str(newest[0]) if newest else None}
        self.write_summary(summary)
        return summary


def train(trainer: Trainer) -> dict:
    """Run to the end in this process (--in-process) or on the Ray this process is connected to;
    returns the summary (also in summary.json). sweep.py runs each Tune trial through here."""
    reason = trainer.run_in_process() if trainer.cfg.in_process else trainer.run_on_ray()
    return trainer.finish(reason)


def export_policy(net: torch.nn.Module, info: envs_lib.EnvInfo, path: Path) -> None:
    """Save obs [B, *O] (float32, or uint8 for image envs) -> action logits [B, A] with
    torch.export (dynamic batch)."""

    class Policy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, obs):
            return self.inner.policy_logits(obs)

    example = torch.zeros(2, *info.obs_shape, dtype=getattr(torch, info.obs_dtype))
    batch = torch.export.Dim("B", min=1, max=4096)
    program = torch.export.export(Policy(net).eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def format_placement(plan: placement.Placement, nodes: dict) -> str:
    """One line: what each component asked for and which nodes it landed on."""
    where = "; ".join(f"{n['ip']} ({node_id[:8]}): learner {n['learner']}, actors {n['actors']}, shards {n['shards']}"
                      for node_id, n in sorted(nodes.items(), key=lambda kv: kv[1]["ip"]))
    learner = "GPU + " if plan.learner_uses_gpu else ""
    spread = plan.actor.get("scheduling_strategy")
    spread = spread if isinstance(spread, str) else "in the trial's placement group"
    return (f"placement: learner {learner}{plan.learner['num_cpus']:g} CPU, {plan.num_actors} actors x "
            f"{plan.actor['num_cpus']:g} CPU ({spread}), shards {spread} | {len(nodes)} node(s): {where}")


def format_summary(s: dict) -> str:
    head = "solved" if s["solved"] else f"stopped ({s['stop_reason']})"
    at = s["solved_at"] or {}
    return (f"{head} {s['env']} [{s['preset']}, seed {s['seed']}] in {at.get('seconds', s['seconds']):.1f} s, "
            f"{at.get('env_steps', s['env_steps']):,} env steps, {s['learner_steps']:,} learner steps: "
            f"greedy eval {s['greedy_eval_mean']:.1f}, sampled eval {s['sampled_eval_mean']:.1f} "
            f"-> {s['run_dir']}")


def check_env_starts(cfg: Config) -> None:
    """Build and reset one env as the actors will (retrying as they do), so an env that cannot
    start is reported before Ray starts or a run directory is made: EnvFailure."""
    envs = VectorEnv(cfg.env, 1, owner="start-up check")
    try:
        envs.reset(seed=envs_lib.derive_seed(cfg.seed, "check"))
    finally:
        envs.close()


def start_ray(cfg: Config) -> None:
    """Start a local Ray, or join the cluster at --address."""
    import ray
    if cfg.address:
        try:
            ray.init(address=cfg.address, log_to_driver=True, runtime_env=cluster_runtime_env(cfg))
        except ConnectionError as exc:
            raise ConfigError(f"--address={cfg.address!r} is invalid: {' '.join(str(exc).split())[:300]}; "
                              "allowed: 'auto' or HOST:PORT of a running Ray head") from None
        total, free = ray.cluster_resources(), ray.available_resources()     # what only the cluster can tell
        placement.plan(cfg, total.get("CPU", 1.0), free.get("CPU", 0.0), free.get("GPU", 0.0))
    else:
        port = {"_metrics_export_port": cfg.metrics_export_port} if cfg.metrics_export_port else {}
        # address="local": a new local Ray even where `ray start` left one running on this machine
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, log_to_driver=True, **port)


def shutdown_ray() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@contextlib.contextmanager
def stop_on_interrupt(trainer: Trainer):
    """The first Ctrl-C (SIGINT) asks the trainer to stop as a spent budget would (final
    checkpoint, policy, summary); the second raises KeyboardInterrupt at once. A SIGINT that
    was ignored when the program started (`nohup`, a shell's background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def on_sigint(signum, frame):
        if trainer.stop_request:
            raise KeyboardInterrupt
        trainer.stop_request = "interrupted"
        print("\ninterrupted: finishing (final checkpoint, policy, summary); Ctrl-C again stops at once", flush=True)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def error_line(exc: Exception) -> int:
    print(f"launch.py: error: {exc}", file=sys.stderr, flush=True)
    return 2


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        info = envs_lib.describe(cfg.env)
        cfg.network_spec(info)          # a torso that cannot take these observations stops here
        resume = preflight.check(cfg, info)
        check_env_starts(cfg)
    except (ConfigError, envs_lib.EnvError, checkpoint.CheckpointError, EnvFailure) as exc:
        return error_line(exc)
    try:
        if not cfg.in_process:
            start_ray(cfg)
        run_dir = make_run_dir(cfg)
    except (ConfigError, placement.PlacementError) as exc:
        shutdown_ray()
        return error_line(exc)
    trainer = Trainer(cfg, info, run_dir, resume)
    try:
        with stop_on_interrupt(trainer):
            summary = train(trainer)
    except KeyboardInterrupt:
        trainer.fail("interrupted twice", "KeyboardInterrupt")
        print(f"launch.py: stopped at once (second Ctrl-C); resume from the newest checkpoint in {run_dir}",
              file=sys.stderr, flush=True)
        return 130
    except EnvFailure as exc:           # the env stopped working mid-run: a failed run, not a bad flag
        trainer.fail("error", str(exc))
        print(f"launch.py: error: {exc} (summary.json in {run_dir})", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        traceback.print_exc()
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        trainer.fail("error", message)
        print(f"launch.py: error: the run failed: {message} (summary.json in {run_dir})", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown_ray()
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
