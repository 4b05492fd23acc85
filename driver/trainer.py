"""The training driver: one loop for every placement (driver/wiring.py), the evaluation
schedule, checkpoints and summary.json.

A round takes the reports of the actors' chunks and the learner's calls, then logs progress,
evaluates when due (a cheap screen first, the full greedy evaluation if the screen reaches the
bar), checkpoints every --checkpoint-every-s and stops when the run is solved, a budget is spent
or a stop is asked for. The end writes the final checkpoint, policy.pt2 and summary.json.

The solving evaluation writes policy.pt2 itself (on the evaluation thread, on Ray), so the
export is not on the path from the solve to the exit; the first evaluation warms torch.export
and matplotlib up for the same reason. summary.json's "timeline" holds the milestones of the
start and the end (driver/timeline.py).
"""

import collections
import concurrent.futures
import json
import math
import time
from datetime import datetime
from pathlib import Path

from actors.evaluation import evaluate
from common import envs as envs_lib
from common import files
from common.config import Config, ConfigError, to_dict
from common.networks import build_network
from common.ray_metrics import Recorder
from common.sequence import NONFINITE_FIELDS
from common.vector_env import EnvFailure
from driver import preflight, run_lock
from driver.bad_data import BadData, BadDataWatch
from driver.metrics import RunLogger
from driver.supervision import ActorSupervisor
from driver.timeline import Timeline
from driver.wiring import Components
from learner import checkpoint, export
from transport.weights import load_numpy_state


def claim_run_dir(run_dir: Path) -> bool:
    """Create run_dir (it may exist empty: preflight allows that) and claim it by creating
    checkpoints/ in it without exist_ok, an atomic step: of two runs that both found the folder
    free (on Ray, ray.init lies between preflight and here), one gets True, the other False."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / "checkpoints").mkdir()
    except FileExistsError:
        return False
    return True


def make_run_dir(cfg: Config) -> Path:
    """A new run directory (or an empty one), claimed before anything is written in it, or the
    one being resumed; config.json, written atomically, holds the config in use. Call only once
    every check has passed. A --run-name another run has claimed is a ConfigError; a default name
    taken (the same config started in the same second) gets a suffix."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
    else:
        name = (
            cfg.run_name
            or f"{cfg.env.replace('/', '_').replace(':', '_')}-{cfg.preset}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
        )
        names = [name] if cfg.run_name else [name] + [f"{name}-{i}" for i in range(2, 100)]
        root = Path(cfg.run_root)
        try:
            run_dir = next((root / n for n in names if claim_run_dir(root / n)), None)
        except OSError as exc:
            raise ConfigError(
                f"--run-root={cfg.run_root!r} is invalid: cannot create {root / name} "
                f"({exc.strerror or type(exc).__name__}); allowed: a writable folder"
            ) from None
        if run_dir is None:
            raise ConfigError(
                f"--run-name={name!r} is invalid: {root / name} was taken by another run that started "
                "at the same time; allowed: a new name"
            )
    try:
        files.reserve(run_dir)  # the room summary.json will need (common/files.py)
        run_lock.hold(run_dir)  # released when the run ends (run_lock.release)
        files.write_atomic(
            run_dir / "config.json", (json.dumps(to_dict(cfg), indent=2) + "\n").encode()
        )
    except run_lock.RunInUse as exc:  # resumed twice at once: the other got there first
        raise preflight.resume_in_use(cfg, exc) from None
    except OSError as exc:
        run_lock.release(run_dir)
        if not cfg.resume:  # a new folder left behind would block its name
            (run_dir / run_lock.LOCK_NAME).unlink(missing_ok=True)
            files.release(run_dir)
            (run_dir / "checkpoints").rmdir()
            run_dir.rmdir()
        raise ConfigError(
            f"--run-root={cfg.run_root!r} is invalid: {exc}; allowed: a folder with free space"
        ) from None
    return run_dir


# summary.json's faults that are there, 0 or not (others appear once they happen: actor_failures, ...)
ALWAYS_REPORTED = (
    "env_errors",
    "env_stalls",
    "dropped_sequences",
    *(f"nonfinite_{kind}" for kind in NONFINITE_FIELDS.values()),
)
# summary.json's fault counts; each is a Ray gauge from the start (0 is news too: Grafana's Faults)
FAULT_KINDS = (
    "actor_failures",
    "chunks_lost",
    "actors_replaced",
    *ALWAYS_REPORTED,
    "replay_failed_calls",
    "replay_sequences_lost",
    "replay_payloads_rejected",
)


class Trainer:
    """Drives the components and decides when to evaluate, checkpoint and stop."""

    def __init__(
        self,
        cfg: Config,
        info: envs_lib.EnvInfo,
        run_dir: Path,
        resume: preflight.ResumePoint | None,
        where,
    ):
        """cfg and where: what driver/wiring.placed returns (cfg.num_actors resolved by the
        placement); resume: the checkpoint to continue from (preflight.check_resume), for
        --resume, else None."""
        self.cfg, self.info, self.run_dir, self.resume, self.where = (
            cfg,
            info,
            run_dir,
            resume,
            where,
        )
        self.solve_return = cfg.solve_return if cfg.solve_return is not None else info.solve_return
        self.log = RunLogger(
            run_dir, json.dumps(to_dict(cfg), indent=2), resume_at=resume and resume.env_steps
        )
        self.eval_seed = envs_lib.derive_seed(cfg.seed, "eval")
        # bench/peers/harness.py screens on the same seeds
        self.screen_seed = envs_lib.derive_seed(cfg.seed, "screen")
        # not eval_seed + 1: that replays all but one of the greedy evaluation's envs
        self.sampled_eval_seed = envs_lib.derive_seed(cfg.seed, "sampled_eval")
        self.last_eval = -math.inf  # env steps at the last evaluation
        self.latest = None  # (network, version) of the newest weights fetched
        # ((network, version, env steps), future): running on eval_thread
        self.evaluation = None
        self.eval_thread = where.evaluator()  # on Ray a driver thread, in-process inline
        self.solved_net = None  # the network whose evaluation solved the run
        # the network policy.pt2 holds (written by the solving evaluation, or at the end)
        self.exported_net = None
        # torch.export and matplotlib imported and set up (first evaluation)
        self.warmed_up = False
        # milestones in seconds since this process started (summary.json)
        self.timeline = Timeline()
        if getattr(where, "ready_at", None):
            self.timeline.mark("ray_up", where.ready_at)
        self.timeline.mark("trainer")
        self.first_env_step_s = None  # seconds from the start to the first chunk of env steps
        self.last_checkpoint = time.monotonic()
        self.first_checkpoint_due = resume is None  # a resumed run has one already
        self.best_eval = -math.inf
        self.solved_at = None
        self.components = None
        self.nodes = {}  # node_map() of a Ray run, for summary.json
        self.learner_steps = 0
        self.resumed_from = None  # checkpoint path when --resume
        # a stop reason from outside the loop (Ctrl-C: "interrupted")
        self.stop_request = ""
        # actor_failures, actors_replaced, ... (summary.json)
        self.faults = collections.Counter()
        self.supervisor = ActorSupervisor(cfg.actor_chunk_steps, self.faults, self.log.scalars)
        self.bad_data = BadDataWatch(self.faults)
        self.metrics = Recorder("driver")  # a no-op unless this process runs on Ray

    # -- building and resuming -------------------------------------------------------------
    def build(self) -> Components:
        if self.resume is not None:
            for error in self.resume.errors:
                print(f"resume: skipped {error}", flush=True)
            # unreadable: renamed, so new checkpoints neither collide nor get pruned
            for path in self.resume.newer:
                print(
                    f"resume: renamed {path.name} to {checkpoint.set_aside(path).name}", flush=True
                )
            self.resumed_from = str(self.resume.path)
            print(f"resume: continuing from {self.resume.path}", flush=True)
        self.components = Components(self.cfg, self.info, self.where).start(
            self.resume and self.resume.data
        )
        if self.resume is not None:
            self.restore(self.components.run_state)
        return self.components

    def restore(self, run_state: dict) -> None:
        self.log.restore(
            int(run_state.get("env_steps", 0)),
            int(run_state.get("episodes", 0)),
            float(run_state.get("seconds", 0.0)),
        )
        self.best_eval = float(run_state.get("best_eval", -math.inf))
        self.learner_steps = int(run_state.get("learner_steps", 0))

    def run_state(self) -> dict:
        """The driver's bookkeeping stored in each checkpoint (plain numbers)."""
        return {
            "env_steps": self.log.env_steps,
            "episodes": self.log.episodes,
            "seconds": self.log.elapsed(),
            "best_eval": self.best_eval,
            "learner_steps": self.learner_steps,
        }

    # -- reports -------------------------------------------------------------------------
    def on_actor(self, stats: dict) -> None:
        if self.first_env_step_s is None and stats["env_steps"]:
            # when this first chunk began
            self.first_env_step_s = self.log.elapsed() - stats["seconds"]
            self.timeline.mark("first_env_step", time.time() - stats["seconds"])
        self.log.actor(stats)
        for fault in ("env_errors", "env_stalls"):
            if stats[fault]:
                self.faults[fault] += stats[fault]
                self.log.scalars({f"faults/{fault}": self.faults[fault]})
        if self.bad_data.add(stats["sequences"], stats["dropped_sequences"], stats["nonfinite"]):
            self.log.scalars(
                {
                    f"faults/{k}": v
                    for k, v in self.faults.items()
                    if k.startswith(("nonfinite", "dropped"))
                }
            )

    def on_learner(self, metrics: dict) -> None:
        """A learner.train report; of one that made no update (data or throttle held it back)
        only the replay fault counters are kept (the summary reports them)."""
        if not metrics.get("learner/updates_in_call"):
            self.log.latest.update(
                {
                    k: v
                    for k, v in metrics.items()
                    if k in ("replay/failed_calls", "replay/lost_sequences", "replay/rejected")
                }
            )
            return
        self.learner_steps = int(metrics.get("learner/steps", self.learner_steps))
        updating_s = metrics.get("learner/seconds", 0.0) - metrics.get("learner/batch_wait_s", 0.0)
        # about: the call's waits come first
        self.timeline.mark("first_learner_step", time.time() - updating_s)
        # The lag in env steps: learner steps behind, at the run's env steps per learner step.
        per_step = self.log.env_steps / max(self.learner_steps, 1)
        self.log.scalars(
            {
                **metrics,
                "learner/policy_lag_env_steps": metrics.get("learner/policy_lag", 0.0) * per_step,
            }
        )

    def _snapshot(self) -> tuple:
        """(network with the newest published weights, its version, env steps now): what an
        evaluation judges, kept as it is while training goes on."""
        weights = self.components.weights
        # not poll(): on Ray its answer would come only by the next evaluation
        got = weights.newest()
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
        return screen, evaluate(
            net, self.cfg.env, self.cfg.eval_episodes, self.eval_seed, greedy=True
        )

    def _passes(self, full) -> bool:
        return self.solve_return is not None and float(full.mean()) >= self.solve_return

    def _evaluation_job(self, net) -> tuple:
        """What eval_thread runs: warm-up (first time), then _judge; a full evaluation that reaches
        the bar solves the run (no evaluation follows one that passes), so its policy is exported
        here, before the driver hears of the solve. Returns (screen, full, wall time it ended)."""
        if not self.warmed_up:
            export.warm_up(net, self.info)
            self.log.warm_up_plot()
            self.warmed_up = True
        screen, full = self._judge(net)
        ended = time.time()
        if full is not None and self._passes(full):
            self._export(net)
        return screen, full, ended

    def _export(self, net) -> None:
        export.export_policy(net, self.info, self.run_dir / "policy.pt2")
        self.exported_net = net
        self.timeline.mark("export")

    def _judged(self, net, version: int, env_steps: int, screen, full, ended: float = None) -> None:
        """Log an evaluation of the weights as of env_steps (`ended`: the wall time it ended); the
        first that reaches the bar solves the run, and its network is the one exported."""
        if screen is not None:
            self.log.screening(screen, env_steps)
        if full is None:
            return
        self.log.evaluation(full, env_steps=env_steps)
        mean = float(full.mean())
        self.best_eval = max(self.best_eval, mean)
        if self._passes(full) and self.solved_at is None:
            self.solved_at = dict(
                seconds=self.log.elapsed(),
                env_steps=env_steps,
                version=version,
                eval_mean=mean,
                eval_std=float(full.std()),
            )
            self.solved_net = net
            self.timeline.mark("solved", ended)

    def maybe_evaluate(self) -> None:
        """Every eval_every_env_steps (once training returns reach eval_min_train_return) judge a
        snapshot of the newest weights on eval_thread (on Ray the driver keeps feeding actors and
        learner meanwhile); one evaluation at a time, taken as soon as it is done."""
        if self.evaluation is not None:
            if not self.evaluation[1].done():
                return
            self._take_evaluation()
        if self.solved_at is not None:  # solved: the exported policy is that evaluation's
            return
        due = self.log.env_steps - self.last_eval >= self.cfg.eval_every_env_steps
        warm = not (self.log.recent_return() < self.cfg.eval_min_train_return)
        if not (due and warm):
            return
        self.last_eval = self.log.env_steps
        net, version, env_steps = self._snapshot()
        self.evaluation = (
            (net, version, env_steps),
            self.eval_thread.submit(self._evaluation_job, net),
        )
        if self.evaluation[1].done():
            self._take_evaluation()

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
        """Every --checkpoint-every-s, and a first one once the learner has trained, so that a run
        killed before --checkpoint-every-s (SIGKILL, a lost machine) leaves one to --resume from."""
        first = self.first_checkpoint_due and self.learner_steps > 0
        if (
            not (force or first)
            and time.monotonic() - self.last_checkpoint < self.cfg.checkpoint_every_s
        ):
            return
        self.first_checkpoint_due = False
        self.last_checkpoint = time.monotonic()
        data = self.components.call(self.components.learner, "checkpoint_bytes", self.run_state())
        # the learner's own step: the driver's may lag
        step = int(checkpoint.contents(data)["steps"])
        checkpoint.save(self.run_dir / "checkpoints", step, data, self.cfg.keep_checkpoints)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> str:
        """Train until a stop reason: each round takes the actors' and the learner's reports (as
        the placement's rounds deliver them), then logs, evaluates and checkpoints when due."""
        c = self.build()
        # asked before any other call, so each answers once it is up
        answers = c.ask_components()
        # actors act from here on
        rounds = self.where.rounds(c, self.cfg.actor_chunk_steps, self.supervisor, self.should_stop)
        answers = answers()
        for role, _, at in answers:
            self.timeline.mark(f"{role}_up", at)
        self.nodes = c.node_map(answers)
        for line in (self.where.describe(self.nodes), self.where.install_dashboard()):
            if line:
                print(line, flush=True)
        reason = ""
        while not reason:
            self.take(rounds.reports())
            self.record_faults()
            self.log.progress(note=self.bad_data.progress_note())
            self.maybe_evaluate()
            self.maybe_checkpoint()
            reason = self.should_stop()
        self.take(rounds.last_reports())
        return reason

    def take(self, reports) -> None:
        for kind, report in reports:
            (self.on_actor if kind == "actor" else self.on_learner)(report)

    def fault_counts(self) -> dict:
        """The run's faults: the supervisor's counts, env errors, and replay's from the learner's
        last report."""
        return dict(
            # the counters every run reports, 0 where nothing happened
            {name: self.faults[name] for name in ALWAYS_REPORTED},
            **self.faults,
            replay_failed_calls=int(self.log.latest.get("replay/failed_calls", 0)),
            replay_sequences_lost=int(self.log.latest.get("replay/lost_sequences", 0)),
            replay_payloads_rejected=int(self.log.latest.get("replay/rejected", 0)),
        )

    def record_faults(self) -> None:
        """Every fault count as the driver's Ray gauge, those still 0 included."""
        for kind, count in {**dict.fromkeys(FAULT_KINDS, 0), **self.fault_counts()}.items():
            self.metrics.set("faults", count, kind=kind)

    # -- the end --------------------------------------------------------------------------
    def finish(self, reason: str) -> dict:
        """Final checkpoint; the evaluation still running is waited for; a run that did not solve
        gets a last full greedy evaluation of its newest weights. The exported policy and the
        summary are those of the weights that solved (else the newest), and their cheap sampled
        evaluation (--sampled-eval-episodes)."""
        train_seconds = self.log.elapsed()
        finish_start = time.monotonic()
        self.timeline.mark("finish")
        self.log.progress(force=True, note=self.bad_data.progress_note())
        # The final checkpoint waits for the learner's call in flight (up to LEARNER_CALL_STEPS
        # updates on Ray): it is saved on a thread of its own while the rest is done here.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint") as saver:
            saving = saver.submit(self.maybe_checkpoint, True)
            if self.evaluation is not None:
                self._take_evaluation()
            self.eval_thread.shutdown()
            if self.solved_at is None:
                net, version, env_steps = self._snapshot()
                self._judged(
                    net, version, env_steps, *self._judge(net, full_only=True), time.time()
                )
            policy = self.solved_net or self.latest[0]
            sampled = evaluate(
                policy,
                self.cfg.env,
                self.cfg.sampled_eval_episodes,
                self.sampled_eval_seed,
                greedy=False,
            )
            self.log.evaluation(sampled, greedy=False)
            if self.exported_net is not policy:
                self._export(policy)
            self.log.plot(
                self.run_dir / "learning_curve.png",
                f"Muesli {self.cfg.env} ({self.cfg.preset}, seed {self.cfg.seed})",
            )
            self.timeline.mark("plot")
            saving.result()
        self.timeline.mark("final_checkpoint")
        last_greedy = self.log.evals[-1][2] if self.log.evals else float("nan")
        summary = self.summary(reason, train_seconds)
        summary.update(
            {
                "greedy_eval_mean": self.solved_at["eval_mean"] if self.solved_at else last_greedy,
                "sampled_eval_mean": float(sampled.mean()),
                "solved_at": self.solved_at,
                "num_actors": self.cfg.num_actors,
                "nodes": self.nodes,
                "timing": {
                    "first_env_step_s": self.first_env_step_s,
                    "finish_s": round(time.monotonic() - finish_start, 2),
                },
            }
        )
        self.write_summary(summary)
        return summary

    def summary(self, reason: str, seconds: float) -> dict:
        """What summary.json holds for any run, finished or failed."""
        return {
            "env": self.cfg.env,
            "preset": self.cfg.preset,
            "seed": self.cfg.seed,
            "stop_reason": reason,
            "solved": self.solved_at is not None,
            "seconds": round(seconds, 1),
            "env_steps": self.log.env_steps,
            "episodes": self.log.episodes,
            "learner_steps": int(self.log.latest.get("learner/steps", 0)),
            "run_dir": str(self.run_dir),
            "faults": self.fault_counts(),
            "resumed_from": self.resumed_from,
        }

    def write_summary(self, summary: dict, failed: bool = False) -> None:
        """summary.json (atomically), with the timeline up to now, the last file written: the
        logs are closed first (of a run that `failed`, a log that cannot be flushed, on a full
        disk say, does not stop the summary), then the space reserved for it is given back."""
        self.timeline.mark("summary")
        summary["timeline"] = self.timeline.as_dict()
        try:
            self.log.close()
        except OSError:
            if not failed:
                raise
        files.release(self.run_dir)
        files.write_atomic(
            self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode()
        )

    def failure(self, exc: BaseException) -> tuple[str, str]:
        """(stop_reason, error) for the summary.json of a run that raised exc: a full disk and
        data that is mostly bad have reasons of their own (common/files.py, driver/bad_data.py)."""
        if files.full_cause(exc):
            return "disk full", str(self.disk_full(exc))
        if isinstance(exc, BadData):
            return exc.reason, str(exc)
        if isinstance(exc, EnvFailure):
            return "error", str(exc)
        return "error", " ".join(f"{type(exc).__name__}: {exc}".split())

    def disk_full(self, exc: BaseException) -> files.DiskFull:
        """exc, a write refused for want of space, as a DiskFull: one of a log line
        (metrics.jsonl, TensorBoard), whose size is unknown, as going on needing about a
        checkpoint's size."""
        if isinstance(exc, files.DiskFull):
            return exc
        newest = checkpoint.list_checkpoints(self.run_dir / "checkpoints")
        needed = newest[0].stat().st_size if newest else None
        return files.DiskFull(
            self.run_dir, "its logs and next checkpoint", needed, files.full_cause(exc)
        )

    def fail(self, reason: str, error: str) -> dict:
        """summary.json of a run that failed after start-up: why it stopped and the newest
        checkpoint to resume from (nothing else is attempted: the failed part may hang)."""
        newest = checkpoint.list_checkpoints(self.run_dir / "checkpoints")
        summary = {
            **self.summary(reason, self.log.elapsed()),
            "error": error,
            "checkpoint": str(newest[0]) if newest else None,
        }
        self.write_summary(summary, failed=True)
        return summary


def train(trainer: Trainer) -> dict:
    """Run to the end; returns the summary (also in summary.json). sweep.py runs each Tune trial
    through here."""
    return trainer.finish(trainer.run())
