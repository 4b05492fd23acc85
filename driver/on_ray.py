"""Every component a Ray actor, placed on the cluster this process is connected to: Sample
Factory's parallel mode. Ray is imported here and in the Ray transports (transport/ray_weights.py,
replay/ray_client.py) only; an in-process run never imports it.

A round takes whatever reports have arrived: every actor always has waits.ACTOR_PIPELINE chunks queued (Ray
runs an actor's calls in order, so the next one starts the moment the last returns) and the
learner a call of waits.LEARNER_CALL_STEPS updates, so neither waits for the driver's bookkeeping.
"""

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from actors.actor import RATE_PREFIX, SelfPlayActor
from common import envs as envs_lib
from common import waits
from common.config import Config, ConfigError
from common.vector_env import EnvFailure
from driver import grafana, placement, reaper
from learner.learner import Learner
from replay.ray_client import RayReplayClient
from replay.shard import ReplayShard
from transport.ray_weights import RayWeightClient, RayWeightPublisher
from transport.weight_store import WeightStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the local Ray's watcher (driver/reaper.py), as Ray itself is one per process
_reaper = None


def cluster_runtime_env(cfg: Config) -> dict:
    """Ray runtime_env for a cluster run: this project's code as the working directory of every
    component process on every node (Ray uploads it once, honouring .gitignore), so a node needs
    only the installed requirements. Run output stays with the driver and is never uploaded. The
    module of a `--env module:EnvId` travels too (py_modules) unless it is installed."""
    if not cfg.ship_code:
        return {}
    runtime_env = {
        "working_dir": str(PROJECT_ROOT),
        "excludes": ["/.git/", "/runs/", "/docs/", "/docker/", "/tests/", "*.pt", "*.pt2", "*.png"],
    }
    env_module = envs_lib.local_module_path(cfg.env)
    if env_module is not None:
        runtime_env["py_modules"] = [str(env_module)]
    return runtime_env


def start_ray(cfg: Config) -> None:
    """Start a local Ray, or join the cluster at --address."""
    if cfg.address:
        try:
            context = ray.init(
                address=cfg.address,
                log_to_driver=True,
                runtime_env=cluster_runtime_env(cfg),
                logging_level=logging.WARNING,
            )
        except ConnectionError as exc:
            raise ConfigError(
                f"--address={cfg.address!r} is invalid: {' '.join(str(exc).split())[:300]}; "
                "allowed: 'auto' or HOST:PORT of a running Ray head"
            ) from None
    else:
        port = {"_metrics_export_port": cfg.metrics_export_port} if cfg.metrics_export_port else {}
        ask_for_token_auth()
        # address="local": a new local Ray even where `ray start` left one running on this machine
        context = ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.dashboard,
            log_to_driver=True,
            logging_level=logging.WARNING,
            **port,
        )
        global _reaper
        _reaper = reaper.watch(local_ray_pids())
    # Ray's own start-up line (INFO, on stderr) is off: stderr keeps warnings and errors only
    where = "joined the Ray cluster at " + cfg.address if cfg.address else "started a local Ray"
    url = getattr(context, "dashboard_url", None)
    print(f"ray: {where}" + (f", dashboard at http://{url}" if url else ""), flush=True)
    keep_rate_lines_off_console()


def ask_for_token_auth() -> None:
    """Token authentication for a new local Ray, as Ray 2.60 turns it on by default, but asked
    for, so Ray does not warn on the console that it turned it on (README: the dashboard asks
    for the token, `ray get-auth-token` prints it). What Ray does when it turns it on itself:
    the mode in the environment (for this process's children) and Ray's cached config refreshed.
    RAY_AUTH_MODE set by the user wins; where Ray's internals differ from 2.60's, Ray warns."""
    initialize = getattr(getattr(ray._raylet, "Config", None), "initialize", None)
    if "RAY_AUTH_MODE" in os.environ or initialize is None:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    initialize("")


def keep_rate_lines_off_console() -> None:
    """The actors' rate lines (actors/actor.py, RATE_PREFIX) stay in their own logs (the
    dashboard's Actors -> Log view) and off this console, where the progress line has the
    run's rate: each of Ray's handlers of the actors' forwarded output gets their batches
    without those lines. Where Ray's internals differ from 2.60's, the lines show here too."""
    dispatcher = getattr(ray._private.worker, "global_worker_stdstream_dispatcher", None)
    handlers, lock = getattr(dispatcher, "handlers", None), getattr(dispatcher, "_lock", None)
    if not isinstance(handlers, list) or lock is None:
        return

    def without_rate_lines(handler):
        def handle(batch):
            lines = [line for line in batch.get("lines", ()) if not line.startswith(RATE_PREFIX)]
            if lines:
                handler({**batch, "lines": lines})

        return handle

    with lock:
        dispatcher.handlers = [(name, without_rate_lines(h)) for name, h in handlers]


def shutdown_ray() -> None:
    """ray.shutdown() without the second a local Ray loses on its autoscaler monitor: asked to
    stop (SIGTERM) after the GCS is gone, the monitor tries to report its own end to the GCS,
    and Ray waits a second before it kills it. Killed first, it takes no time. Where Ray's
    internals differ from 2.60's, a plain ray.shutdown()."""
    for info in local_ray_processes().get("monitor", []):
        with contextlib.suppress(AttributeError, OSError):
            info.process.kill()
    ray.shutdown()
    global _reaper
    reaper.release(_reaper)
    _reaper = None


def local_ray_processes() -> dict:
    """{kind: [ProcessInfo]} of the local Ray this process started (GCS, raylet, dashboard,
    monitors); {} when it started none (a joined cluster) or where Ray's internals differ from
    2.60's."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not node.is_head():
        return {}
    return getattr(node, "all_processes", {})


def local_ray_pids() -> list[int]:
    pids = []
    for infos in local_ray_processes().values():
        for info in infos:
            with contextlib.suppress(AttributeError):
                pids.append(info.process.pid)
    return pids


def remote_classes(cfg: Config, plan: placement.Placement) -> dict:
    """The component classes wrapped with ray.remote as `plan` places them: {plain class: Ray actor class}.

    Actors and shards come back after a crash or a lost node (Ray re-runs __init__: a shard
    restarts empty, an actor resumes with the newest weights). The store also restarts if its
    node leaves: it is empty until the learner's next publish.
    Without --task-events no call is recorded in Ray's task list: the GCS would keep a record of
    each of the thousands of calls a minute, and its memory grew ~10 MB/min (docs/soak.md)."""
    restart = dict(max_restarts=cfg.max_restarts)
    events = dict(enable_task_events=cfg.task_events)
    return {
        WeightStore: ray.remote(**plan.store, max_restarts=-1, **events)(WeightStore),
        ReplayShard: ray.remote(**plan.shard, **restart, **events)(ReplayShard),
        Learner: ray.remote(**plan.learner, **events)(Learner),
        SelfPlayActor: ray.remote(**plan.actor, **restart, **events)(SelfPlayActor),
    }


def cluster_plan(cfg: Config) -> placement.Placement:
    """driver/placement.py's plan for the cluster's CPUs and GPUs; inside a Ray Tune trial
    (sweep.py), for the bundles of its placement group after its own first one."""
    group = ray.util.get_current_placement_group()
    if group is None:
        plan = plan_when_free(cfg, lambda: (ray.cluster_resources(), ray.available_resources()))
        # The store prefers the driver's node (soft: it restarts elsewhere if that node leaves).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return dataclasses.replace(plan, store={**plan.store, "scheduling_strategy": here})
    bundles = group.bundle_specs[1:]
    cpus, gpus = (sum(b.get(kind, 0.0) for b in bundles) for kind in ("CPU", "GPU"))
    return placement.inside(
        placement.plan(cfg, cpus, cpus, gpus), PlacementGroupSchedulingStrategy(group)
    )


def plan_when_free(cfg: Config, resources, wait_s=waits.FREE_CPUS_WAIT_S, sleep=time.sleep):
    """placement.plan for `resources()` (Ray's (total, available) dicts). A plan short of CPUs
    while some are in use is tried again for up to `wait_s`: a job that just ended on this
    cluster (the last run of a script, a sweep's trial) frees its actors' CPUs a moment later."""
    deadline = time.monotonic() + wait_s
    while True:
        total, free = resources()
        try:
            return placement.plan(
                cfg, total.get("CPU", 1.0), free.get("CPU", 0.0), free.get("GPU", 0.0)
            )
        except placement.PlacementError:
            if free.get("CPU", 0.0) >= total.get("CPU", 1.0) or time.monotonic() >= deadline:
                raise
        sleep(waits.FREE_CPUS_POLL_S)


def format_placement(plan: placement.Placement, nodes: dict) -> str:
    """One line: what each component asked for and which nodes it landed on."""
    where = "; ".join(
        f"{n['ip']} ({node_id[:8]}): learner {n['learner']}, actors {n['actors']}, shards {n['shards']}"
        for node_id, n in sorted(nodes.items(), key=lambda kv: kv[1]["ip"])
    )
    learner = "GPU + " if plan.learner_uses_gpu else ""
    spread = plan.actor.get("scheduling_strategy")
    spread = spread if isinstance(spread, str) else "in the trial's placement group"
    return (
        f"placement: learner {learner}{plan.learner['num_cpus']:g} CPU, {plan.num_actors} actors x "
        f"{plan.actor['num_cpus']:g} CPU ({spread}), shards {spread} | {len(nodes)} node(s): {where}"
    )


class RayRounds:
    def __init__(self, components, chunk_steps: int, supervisor):
        self.c, self.chunk_steps, self.supervisor = components, chunk_steps, supervisor
        self.pending = {}  # collect call ref -> actor index
        self.retry_at = {}  # actor index -> when to call it again
        for index in range(len(components.actors)):
            self._queue(index, waits.ACTOR_PIPELINE)
        self.learner_call = self._train()

    def _queue(self, index: int, calls: int = 1) -> None:
        for _ in range(calls):
            self.pending[self.c.actors[index].collect.remote(self.chunk_steps)] = index

    def _train(self):
        return self.c.learner.train.remote(waits.LEARNER_CALL_STEPS, waits.LEARNER_WAIT_S)

    def reports(self):
        """("actor", stats) and ("learner", metrics) of every call that has finished: waits for
        one, then takes everything ready in one pass, so the learner's report is never queued
        behind a stream of fast actor chunks. A failed actor call goes to the supervisor."""
        for index, when in list(self.retry_at.items()):
            if time.monotonic() >= when:
                del self.retry_at[index]
                self._queue(index, waits.ACTOR_PIPELINE)
        refs = [self.learner_call] + list(self.pending)
        ray.wait(refs, num_returns=1, timeout=waits.ROUND_WAIT_S)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref == self.learner_call:
                yield "learner", ray.get(ref)
                self.learner_call = self._train()
                continue
            index = self.pending.pop(ref)
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # died, restarting, or its node left
                self.retry_at[index] = time.monotonic() + self._failed(index, exc)
                continue
            # RayTaskError(EnvFailure): its text holds the remote traceback
            except EnvFailure as exc:
                raise exc.cause from None
            self.supervisor.succeeded(index)
            yield "actor", stats
            self._queue(index)

    def _failed(self, index: int, exc: Exception) -> float:
        """Seconds until actor `index` is called again, after replacing it if the supervisor says so."""
        wait = self.supervisor.failed(
            index, type(exc).__name__, isinstance(exc, ray.exceptions.ActorDiedError)
        )
        if wait is None:
            ray.kill(self.c.actors[index], no_restart=True)
            self.c.actors[index] = self.c.new_actor(index)
            wait = 0.0
        return wait

    def last_reports(self):
        """A last learner report that has arrived counts; none is waited for."""
        done, _ = ray.wait([self.learner_call], timeout=0)
        return [("learner", ray.get(self.learner_call))] if done else []


# Ray's core worker logs an error the first time an actor that may restart is given an actor
# handle (ray#53727: creation arguments held by reference may be gone when it restarts). Each
# self-play actor is given the replay shards' and the weight store's handles, which the driver
# holds until the run ends, so a restarted actor finds them; this line says so on the console.
RESTART_ERROR_NOTE = (
    "note: the core_worker error above (ray#53727) is about the replay and weight-store handles "
    "each actor is given; the driver holds them all run, so a restarted actor finds them"
)


class OnRay:
    """Where components run: Ray actors placed by `cluster_plan`. Same methods as
    driver/in_process.InProcess."""

    def __init__(self, cfg: Config):
        self.plan = cluster_plan(cfg)
        self.num_actors = self.plan.num_actors
        self.classes = remote_classes(cfg, self.plan)
        # the first actor's creation prints Ray's error line, once per process
        self.restart_note_due = cfg.max_restarts != 0
        # Ray is up and the plan made (summary.json timeline)
        self.ready_at = time.time()

    def new(self, cls, *args):
        handle = self.classes[cls].remote(*args)
        if cls is SelfPlayActor and self.restart_note_due:
            self.restart_note_due = False
            print(RESTART_ERROR_NOTE, flush=True)
        return handle

    def call(self, handle, method: str, *args):
        return ray.get(getattr(handle, method).remote(*args))

    replay_client = RayReplayClient
    weight_client = RayWeightClient
    weight_publisher = RayWeightPublisher

    def ask_components(self, components):
        """Ask every component for its node and the wall time of its answer, without waiting: a
        Ray actor runs its calls in order, so one asked before any other call answers as soon as
        its constructor has returned. Returns a function that waits for the answers:
        [(role, node_id, time), ...] with role 'store', 'shard', 'learner' or 'actor'."""
        c = components
        where = lambda _self: (ray.get_runtime_context().get_node_id(), time.time())  # noqa: E731
        roles = (
            [("store", c.store)]
            + [("shard", s) for s in c.shards]
            + [("learner", c.learner)]
            + [("actor", a) for a in c.actors]
        )
        refs = [handle.__ray_call__.remote(where) for _, handle in roles]
        return lambda: [(role, *answer) for (role, _), answer in zip(roles, ray.get(refs))]

    def node_map(self, answers) -> dict:
        """{node_id: {"ip", "learner", "actors", "shards"}}: component counts per node, from the
        answers of `ask_components` (so it needs no dashboard)."""
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        out = {}
        for role, node_id, _ in answers:
            if role == "store":
                continue
            node = out.setdefault(
                node_id, {"ip": ips.get(node_id, "?"), "learner": 0, "actors": 0, "shards": 0}
            )
            node[{"learner": "learner", "actor": "actors", "shard": "shards"}[role]] += 1
        return out

    def describe(self, nodes: dict) -> str:
        return format_placement(self.plan, nodes)

    def install_dashboard(self) -> str:
        """Put the Grafana dashboard where the Grafana of this machine's Ray head looks
        (driver/grafana.py); the line that says where, or "" off the head or without its
        dashboard. Called once the components are up: the head writes its folder at start."""
        node = getattr(ray._private.worker, "_global_node", None)
        written = node is not None and grafana.install(node.get_session_dir_path())
        return (
            f"grafana: dashboard muesli-ray in {written.parent} (docs/dashboard.md)"
            if written
            else ""
        )

    def rounds(self, components, chunk_steps: int, supervisor, stop=None) -> RayRounds:
        """stop: not needed here, as a round waits at most waits.ROUND_WAIT_S and a learner call is short."""
        return RayRounds(components, chunk_steps, supervisor)

    def evaluator(self):
        """A driver thread: the driver keeps feeding actors and learner while an evaluation runs."""
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evaluate")
