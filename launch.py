"""Train Muesli: `python launch.py [--preset NAME] [--field-name VALUE ...]`.

Builds the plain components (weight store, replay shards, learner, self-play actors),
wraps them with ray.remote (local Ray by default, `--address` joins a cluster) or runs
them in this process (`--in-process`), drives training until a separate greedy
evaluation reaches the solve threshold or a budget runs out, and writes a run
directory: config.json, metrics.jsonl, tensorboard/, checkpoints/, learning_curve.png
and policy.pt2 (torch.export; load with torch.export.load, no project code needed).
"""
import dataclasses
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from actors.actor import SelfPlayActor
from actors.evaluate import evaluate
from actors.params import WeightClient, WeightPublisher, WeightStore, load_numpy_state
from common import envs as envs_lib
from common import placement
from common.config import Config, ConfigError, parse_config, to_dict
from common.metrics import RunLogger
from common.networks import build_network
from common.sequence import SequenceSpec
from learner import checkpoint
from learner.learner import Learner
from replay.client import ReplayClient, split
from replay.shard import ReplayShard

LEARNER_CALL_STEPS = 50      # updates per learner call before it reports back
PROJECT_ROOT = Path(__file__).resolve().parent


def cluster_runtime_env(cfg: Config) -> dict:
    """Ray runtime_env for a cluster run: this project's code as the working directory of every
    component process on every node (Ray uploads it once, honouring .gitignore), so a node needs
    only the installed requirements. Run output stays with the driver and is never uploaded."""
    if not cfg.ship_code:
        return {}
    return {"working_dir": str(PROJECT_ROOT),
            "excludes": ["/.git/", "/runs/", "/docs/", "/docker/", "/tests/", "*.pt", "*.pt2", "*.png"]}


def make_run_dir(cfg: Config) -> Path:
    name = cfg.run_name or f"{cfg.env.replace('/', '_')}-{cfg.preset}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run_root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return run_dir


class Components:
    """The system's parts, either plain objects or Ray actor handles (`remote`)."""

    def __init__(self, cfg: Config, info: envs_lib.EnvInfo, remote: bool):
        self.remote = remote
        spec = SequenceSpec(cfg.sequence_length, info.obs_shape, info.obs_dtype, info.num_actions)
        if remote:
            import ray
            total, free = ray.cluster_resources(), ray.available_resources()
            self.plan = placement.plan(cfg, total.get("CPU", 1.0), free.get("CPU", 0.0), free.get("GPU", 0.0))
            make = {
                WeightStore: ray.remote(**self.plan.store)(WeightStore),
                ReplayShard: ray.remote(**self.plan.shard)(ReplayShard),
                Learner: ray.remote(**self.plan.learner)(Learner),
                SelfPlayActor: ray.remote(**self.plan.actor)(SelfPlayActor),
            }
            new = lambda cls, *args: make[cls].remote(*args)  # noqa: E731
            num_actors = self.plan.num_actors
        else:
            self.plan = None
            new = lambda cls, *args: cls(*args)  # noqa: E731
            num_actors = placement.in_process_actors(cfg)
        # The actors' rate limit divides by num_actors, so they get the resolved count.
        self.cfg = cfg = dataclasses.replace(cfg, num_actors=num_actors)
        self.store = new(WeightStore)
        capacities = split(cfg.replay_capacity, cfg.num_replay_shards)
        self.shards = [new(ReplayShard, spec, capacities[i], envs_lib.derive_seed(cfg.seed, "actor", 1000 + i), i)
                       for i in range(cfg.num_replay_shards)]
        self.learner = new(Learner, cfg, ReplayClient(self.shards, spec, remote), WeightPublisher(self.store, remote))
        self.actors = [new(SelfPlayActor, cfg, i, ReplayClient(self.shards, spec, remote),
                           WeightClient(self.store, remote)) for i in range(cfg.num_actors)]
        self.weights = WeightClient(self.store, remote)

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

    def __init__(self, cfg: Config, info: envs_lib.EnvInfo, run_dir: Path):
        self.cfg, self.info, self.run_dir = cfg, info, run_dir
        self.solve_return = cfg.solve_return if cfg.solve_return is not None else info.solve_return
        self.log = RunLogger(run_dir, json.dumps(to_dict(cfg), indent=2))
        self.eval_net = build_network(cfg.network_spec(info)).eval()
        self.eval_seed = envs_lib.derive_seed(cfg.seed, "eval")
        self.last_eval = -math.inf
        self.last_checkpoint = time.monotonic()
        self.best_eval = -math.inf
        self.solved_at = None
        self.components = None
        self.nodes = {}                 # node_map() of a Ray run, for summary.json

    # -- shared bookkeeping -------------------------------------------------------------
    def on_actor(self, stats: dict) -> None:
        self.log.actor(stats)

    def on_learner(self, metrics: dict) -> None:
        self.log.scalars(metrics)

    def _refresh_eval_net(self) -> int:
        self.components.weights.request()
        got = self.components.weights.poll()
        if got is None and self.components.weights.version < 0:
            got = self.components.weights.wait()
        if got is not None:
            load_numpy_state(self.eval_net, got[1])
        return self.components.weights.version

    def maybe_evaluate(self, force: bool = False) -> None:
        now = self.log.elapsed()
        due = now - self.last_eval >= self.cfg.eval_every_s
        warm = not (self.log.recent_return() < self.cfg.eval_min_train_return)
        if not force and not (due and warm):
            return
        self.last_eval = now
        version = self._refresh_eval_net()
        screen = min(self.cfg.eval_screen_episodes, self.cfg.eval_episodes)
        if not force and self.solve_return is not None and screen < self.cfg.eval_episodes:
            # A cheap look first (its own seeds): the full evaluation only when it could pass.
            returns = evaluate(self.eval_net, self.cfg.env, screen, self.eval_seed + 7919, greedy=True)
            self.log.scalars({"eval/screen_return": float(returns.mean())})
            if returns.mean() < self.solve_return:
                return
        returns = evaluate(self.eval_net, self.cfg.env, self.cfg.eval_episodes, self.eval_seed, greedy=True)
        self.log.evaluation(returns)
        mean = float(returns.mean())
        self.best_eval = max(self.best_eval, mean)
        if self.solve_return is not None and mean >= self.solve_return and self.solved_at is None:
            self.solved_at = dict(seconds=self.log.elapsed(), env_steps=self.log.env_steps, version=version,
                                  eval_mean=mean, eval_std=float(returns.std()))

    def should_stop(self) -> str:
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
        data = self.components.call(self.components.learner, "checkpoint_bytes")
        steps = int(self.log.latest.get("learner/steps", 0))
        checkpoint.save(self.run_dir / "checkpoints", steps, data, self.cfg.keep_checkpoints)

    # -- the two drivers ----------------------------------------------------------------
    def run_in_process(self) -> str:
        self.components = c = Components(self.cfg, self.info, remote=False)
        while True:
            for actor in c.actors:
                self.on_actor(actor.collect(self.cfg.actor_chunk_steps))
            metrics = c.learner.train(LEARNER_CALL_STEPS, wait_s=0.0)
            if metrics.get("learner/updates_in_call"):
                self.on_learner(metrics)
            self.log.progress()
            self.maybe_evaluate()
            self.maybe_checkpoint()
            reason = self.should_stop()
            if reason:
                return reason

    def run_on_ray(self) -> str:
        import ray
        self.components = c = Components(self.cfg, self.info, remote=True)
        self.nodes = c.node_map()
        print(format_placement(c.plan, self.nodes), flush=True)
        pending = {a.collect.remote(self.cfg.actor_chunk_steps): a for a in c.actors}
        learner_call = c.learner.train.remote(LEARNER_CALL_STEPS, 0.5)
        reason = ""
        while not reason:
            ready, _ = ray.wait(list(pending) + [learner_call], num_returns=1, timeout=0.5)
            for ref in ready:
                if ref == learner_call:
                    metrics = ray.get(ref)
                    if metrics.get("learner/updates_in_call"):
                        self.on_learner(metrics)
                    learner_call = c.learner.train.remote(LEARNER_CALL_STEPS, 0.5)
                else:
                    actor = pending.pop(ref)
                    self.on_actor(ray.get(ref))
                    pending[actor.collect.remote(self.cfg.actor_chunk_steps)] = actor
            self.log.progress()
            self.maybe_evaluate()
            self.maybe_checkpoint()
            reason = self.should_stop()
        ray.wait(list(pending) + [learner_call], num_returns=len(pending) + 1, timeout=30)
        return reason

    # -- the end --------------------------------------------------------------------------
    def finish(self, reason: str) -> dict:
        train_seconds = self.log.elapsed()
        self.log.progress(force=True)
        self.maybe_checkpoint(force=True)
        if self.solved_at is None:
            self.maybe_evaluate(force=True)
        self._refresh_eval_net()
        sampled = evaluate(self.eval_net, self.cfg.env, self.cfg.eval_episodes, self.eval_seed + 1, greedy=False)
        self.log.evaluation(sampled, greedy=False)
        export_policy(self.eval_net, self.info, self.run_dir / "policy.pt2")
        self.log.plot(self.run_dir / "learning_curve.png", f"Muesli {self.cfg.env} ({self.cfg.preset}, seed {self.cfg.seed})")
        last_greedy = self.log.evals[-1][2] if self.log.evals else float("nan")
        summary = {
            "env": self.cfg.env, "preset": self.cfg.preset, "seed": self.cfg.seed, "stop_reason": reason,
            "solved": self.solved_at is not None, "seconds": round(train_seconds, 1), "env_steps": self.log.env_steps,
            "episodes": self.log.episodes, "learner_steps": int(self.log.latest.get("learner/steps", 0)),
            "greedy_eval_mean": self.solved_at["eval_mean"] if self.solved_at else last_greedy,
            "sampled_eval_mean": float(sampled.mean()), "solved_at": self.solved_at, "run_dir": str(self.run_dir),
            "num_actors": self.components.cfg.num_actors, "nodes": self.nodes,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log.close()
        return summary


def export_policy(net: torch.nn.Module, info: envs_lib.EnvInfo, path: Path) -> None:
    """Save obs [B, *O] float32 -> action logits [B, A] with torch.export (dynamic batch)."""

    class Policy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, obs):
            return self.inner.policy_logits(obs)

    example = torch.zeros(2, *info.obs_shape, dtype=torch.float32)
    batch = torch.export.Dim("B", min=1, max=4096)
    program = torch.export.export(Policy(net).eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def format_placement(plan: placement.Placement, nodes: dict) -> str:
    """One line: what each component asked for and which nodes it landed on."""
    where = "; ".join(f"{n['ip']} ({node_id[:8]}): learner {n['learner']}, actors {n['actors']}, shards {n['shards']}"
                      for node_id, n in sorted(nodes.items(), key=lambda kv: kv[1]["ip"]))
    learner = "GPU + " if plan.learner_uses_gpu else ""
    return (f"placement: learner {learner}{plan.learner['num_cpus']:g} CPU, {plan.num_actors} actors x "
            f"{plan.actor['num_cpus']:g} CPU (SPREAD), shards SPREAD | {len(nodes)} node(s): {where}")


def format_summary(s: dict) -> str:
    head = "solved" if s["solved"] else f"stopped ({s['stop_reason']})"
    at = s["solved_at"] or {}
    return (f"{head} {s['env']} [{s['preset']}, seed {s['seed']}] in {at.get('seconds', s['seconds']):.1f} s, "
            f"{at.get('env_steps', s['env_steps']):,} env steps, {s['learner_steps']:,} learner steps: "
            f"greedy eval {s['greedy_eval_mean']:.1f}, sampled eval {s['sampled_eval_mean']:.1f} "
            f"-> {s['run_dir']}")


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        info = envs_lib.describe(cfg.env)
    except (ConfigError, envs_lib.EnvError) as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2
    run_dir = make_run_dir(cfg)
    trainer = Trainer(cfg, info, run_dir)
    started_ray = False
    try:
        if cfg.in_process:
            reason = trainer.run_in_process()
        else:
            import ray
            if cfg.address:
                ray.init(address=cfg.address, log_to_driver=True, runtime_env=cluster_runtime_env(cfg))
            else:
                port = {"_metrics_export_port": cfg.metrics_export_port} if cfg.metrics_export_port else {}
                ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, log_to_driver=True, **port)
                started_ray = True
            reason = trainer.run_on_ray()
        summary = trainer.finish(reason)
    finally:
        if started_ray:
            import ray
            ray.shutdown()
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
