"""Throughput of the system's parts on this machine, as one table plus JSON.

  python -m bench.throughput                          # ~2-3 minutes
  python -m bench.throughput --quick                  # ~1 minute, short windows
  python -m bench.throughput --out docs/throughput.json --actors 1 2 4 8 --device cuda
  python -m bench.throughput --presets cartpole atari-pong --actor-rows-only --actors 1 2 --seconds 10

Rows (the real components, built by launch.py's wiring (driver/wiring.py), with the config of each
--presets preset (default: cartpole), its replay rate limit off; the env, actor and EnvPool rows are
repeated per preset, the replay, learner and weights rows are for the first preset):

- bare env: the actors' vector env (common/vector_env.py: same env count as one actor,
  same-step autoreset), random actions, one process: the ceiling for one core.
- actor: SelfPlayActor.collect env steps/s with its batched inference, sequence cutting
  and encoding; replay's rate limit is off (replay_ratio = 0), the weights are a
  WeightStore with published initial weights, no learner. In-process with an in-process replay shard (as --in-process),
  in-process with the sequences discarded (the actor alone), and on a local Ray with
  1, 2, 4 actors and Ray replay shards, each actor with RayRounds' PIPELINE calls in flight as a
  run has them. `/ bare per core` divides the rate by the cores the actors can use
  (min(actors, CPUs)) and by the bare env rate.
- envpool (Atari presets, when the `envpool` package imports): EnvPool's C++ vector env with the
  same preprocessing (bench/envpool_env.py), random actions, one worker thread and one per CPU.
- replay: ReplayShard insert and sample rates in sequences/s (in-process, payloads
  stacked by the actor's ReplayClient from its real sequences, 32 per payload), and sample + decode through
  ReplayClient as the learner sees it.
- learner: Learner.train sampled transitions/s (B x T per second) from a prefilled
  in-process shard, on CPU, and on CUDA where it exists (--device).
- weights: publish (encode) + fetch (request, get, decode) latency by a WeightClient,
  in-process and on Ray (the client in another Ray actor; the row includes one actor
  call round trip, reported on its own too).
"""

import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from actors.actor import SelfPlayActor
from bench.host import describe
from common import envs as envs_lib
from common.cli import script_parser
from common.config import PRESETS, Config, validate
from common.networks import build_network
from common.sequence import SequenceSpec
from common.vector_env import VectorEnv
from common.waits import ACTOR_PIPELINE as PIPELINE
from driver.wiring import Components, placed
from learner.learner import Learner, resolve_device
from replay.client import ReplayClient
from replay.shard import ReplayShard
from replay.stream import BatchStream
from transport.weight_store import WeightStore
from transport.weights import WeightClient, WeightPublisher


class Table:
    """Rows of (section, what, value, unit, ratio, note), printed as one table at the end."""

    def __init__(self):
        self.rows = []

    def add(
        self, section: str, what: str, value: float, unit: str, ratio=None, note: str = "", **extra
    ) -> dict:
        load = os.getloadavg()[0]
        note = f"{note}; load {load:.1f}" if note else f"load {load:.1f}"
        row = {
            "section": section,
            "what": what,
            "value": value,
            "unit": unit,
            "ratio": ratio,
            "note": note,
            "load_average": round(load, 2),
            **extra,
        }
        self.rows.append(row)
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"
        print(
            f"  {section:<8} {what:<46} {shown:>12} {unit}" + (f"  ({note})" if note else ""),
            flush=True,
        )
        return row

    def print(self) -> None:
        print(f"\n{'section':<9}{'measurement':<47}{'value':>12}  {'unit':<16}{'ratio':>8}  note")
        for r in self.rows:
            value = f"{r['value']:,.0f}" if r["value"] >= 100 else f"{r['value']:,.3g}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
            print(
                f"{r['section']:<9}{r['what']:<47}{value:>12}  {r['unit']:<16}{ratio:>8}  {r['note']}"
            )


def timed(seconds: float, step) -> tuple:
    """Call step() (returns units done) until `seconds` have passed; (units, elapsed)."""
    done, start = 0, time.perf_counter()
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done, elapsed


class KeepingShard:
    """A replay shard stand-in behind a real ReplayClient: keeps up to `keep` payloads
    undecoded and stores nothing, so the actor is measured without replay's work."""

    def __init__(self, keep: int):
        self.keep, self.payloads = keep, []

    def insert(self, payloads) -> dict:
        self.payloads.extend(payloads[: max(0, self.keep - len(self.payloads))])
        return {"accepted": len(payloads), "rejected": 0, "room": self.room()}

    def room(self) -> float:
        return float("inf")


def publish_initial(cfg: Config, info, publisher) -> None:
    """Version 0 of a fresh network into the publisher's store (what the learner's start publishes)."""
    publisher.publish(0, build_network(cfg.network_spec(info)))


# -- measurements --------------------------------------------------------------------------
class Bare:
    """The bare vector env (the actors' VectorEnv, random actions, this process), measured again
    around every actor row: on a shared machine the rate moves by 2x within a minute, so each
    ratio divides by the mean of the bare rates measured just before and just after its row."""

    def __init__(self, cfg: Config, info):
        self.envs, self.E = VectorEnv(cfg.env, cfg.envs_per_actor), cfg.envs_per_actor
        self.envs.reset(seed=0)
        self.actions = np.random.default_rng(0).integers(0, info.num_actions, size=(4096, self.E))
        self.i = 0

    def measure(self, seconds: float) -> float:
        def step():
            for _ in range(16):
                self.envs.step(self.actions[self.i % len(self.actions)])
                self.i += 1
            return 16 * self.E

        steps, elapsed = timed(seconds, step)
        return steps / elapsed

    def around(self, seconds: float, measure):
        """(measure()'s result, bare rate: the mean of seconds / 2 of it before and after)."""
        before = self.measure(seconds / 2)
        result = measure()
        return result, (before + self.measure(seconds / 2)) / 2


def bare_env(cfg: Config, info, seconds: float, table: Table, label: str = "") -> Bare:
    bare = Bare(cfg, info)
    table.add(
        "env",
        f"{label}bare vector env, {cfg.envs_per_actor} envs, random actions",
        bare.measure(seconds),
        "env steps/s",
        note="one process, one core",
    )
    return bare


def actor_in_process(
    cfg: Config, info, spec: SequenceSpec, seconds: float, bare: Bare, table: Table, label: str = ""
) -> list:
    """In-process actor with a real shard, then with the sequences discarded; returns payloads
    of the second run (real sequences, for the replay measurements)."""
    store = WeightStore()
    publish_initial(cfg, info, WeightPublisher(store))
    chunk, prefix = cfg.actor_chunk_steps, label
    for label, replay in (
        (
            "in-process, in-process shard",
            ReplayClient([ReplayShard(spec, cfg.replay_capacity)], spec),
        ),
        ("in-process, sequences discarded", ReplayClient([KeepingShard(keep=4096)], spec)),
    ):
        actor = SelfPlayActor(cfg, 0, spec, replay, WeightClient(store))
        actor.collect(chunk)  # warm-up
        infer = []

        def step(actor=actor, infer=infer):
            stats = actor.collect(chunk)
            infer.append(stats["inference_s"] / max(stats["seconds"], 1e-9))
            return stats["env_steps"]

        (steps, elapsed), bare_rate = bare.around(seconds, lambda: timed(seconds, step))
        rate = steps / elapsed
        table.add(
            "actor",
            f"{prefix}1 actor, {label}",
            rate,
            "env steps/s",
            ratio=rate / bare_rate,
            note=f"{rate / bare_rate:.0%} of bare ({bare_rate:,.0f} around it); inference "
            f"{statistics.mean(infer):.0%} of its time",
            actors=1,
            cores=1,
            bare=bare_rate,
        )
    return replay.shards[0].payloads


def actors_on_ray(
    cfg: Config, info, counts, seconds: float, bare: Bare, cpus: int, table: Table, label: str = ""
) -> None:
    """As RayRounds feeds actors in a run: every actor always has PIPELINE collect calls queued,
    so it never waits for this driver between chunks."""
    import ray

    chunk = cfg.actor_chunk_steps
    most = max(counts)
    # Store, shards and actors placed and wrapped as launch.py's run on Ray has them; no learner
    # starts, so the actors have the CPUs to themselves; idle ones cost nothing.
    cfg, where = placed(dataclasses.replace(cfg, num_actors=most))
    c = Components(cfg, info, where)
    publish_initial(cfg, info, where.weight_publisher(c.store))
    actors = [c.new_actor(i) for i in range(most)]
    t = time.perf_counter()
    ray.get([a.collect.remote(chunk) for a in actors])  # start-up and warm-up
    print(f"  (ray: {most} actors started and warm in {time.perf_counter() - t:.1f} s)", flush=True)
    one = None
    for n in counts:
        (rate, infer), bare_rate = bare.around(
            seconds, lambda n=n: run_actors(actors[:n], chunk, seconds)
        )
        cores = min(n, cpus)
        one = one or rate
        table.add(
            "actor",
            f"{label}{n} actor{'s' if n > 1 else ''} on Ray, {cfg.num_replay_shards} Ray shard(s)",
            rate,
            "env steps/s",
            ratio=rate / cores / bare_rate,
            note=f"{rate / cores / bare_rate:.0%} of bare per core ({cores} core{'s' if cores > 1 else ''}; bare "
            f"{bare_rate:,.0f} around it); {rate / one:.2f}x 1 actor; inference {infer:.0%}",
            actors=n,
            cores=cores,
            speedup=rate / one,
            bare=bare_rate,
        )
    for handle in [*actors, *c.shards, c.store]:
        ray.kill(handle)


def run_actors(actors: list, chunk: int, seconds: float) -> tuple:
    """(env steps/s, mean share of inference in collect) of Ray actors fed for `seconds` as
    RayRounds feeds them: PIPELINE calls queued per actor."""
    import ray

    start = time.perf_counter()
    pending = {a.collect.remote(chunk): a for a in actors for _ in range(PIPELINE)}
    steps, infer = 0, []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            actor = pending.pop(ref)
            stats = ray.get(ref)
            steps += stats["env_steps"]
            infer.append(stats["inference_s"] / max(stats["seconds"], 1e-9))
            if time.perf_counter() - start < seconds:
                pending[actor.collect.remote(chunk)] = actor
    return steps / (time.perf_counter() - start), statistics.mean(infer)


def envpool_env(
    cfg: Config, info, seconds: float, bare: Bare, cpus: int, table: Table, label: str = ""
) -> None:
    """EnvPool with the same preprocessing (bench/envpool_env.py), random actions: one worker
    thread (per core, against the bare row), then one per CPU."""
    from bench.envpool_env import make_envpool

    actions = np.random.default_rng(0).integers(
        0, info.num_actions, size=(4096, cfg.envs_per_actor)
    )
    for threads in sorted({1, cpus}):
        envs = make_envpool(cfg.env, cfg.envs_per_actor, seed=0, num_threads=threads)
        obs, _ = envs.reset()
        assert obs.shape[1:] == info.obs_shape and obs.dtype == np.uint8, (obs.shape, obs.dtype)
        i = 0

        def step(envs=envs):
            nonlocal i
            for _ in range(16):
                envs.step(actions[i % len(actions)])
                i += 1
            return 16 * cfg.envs_per_actor

        (steps, elapsed), bare_rate = bare.around(seconds, lambda: timed(seconds, step))
        envs.close()
        rate = steps / elapsed
        per_core = rate / min(threads, cpus)
        table.add(
            "envpool",
            f"{label}EnvPool, {cfg.envs_per_actor} envs, {threads} thread(s), random actions",
            rate,
            "env steps/s",
            ratio=per_core / bare_rate,
            note=f"{per_core / bare_rate:.2f}x bare per core ({bare_rate:,.0f} around it)",
            threads=threads,
            bare=bare_rate,
        )


def replay_rates(
    cfg: Config, spec: SequenceSpec, payloads: list, seconds: float, table: Table
) -> ReplayShard:
    """Insert and sample rates of one in-process shard; returns the filled shard. Payloads
    are what actors send: 32 sequences stacked in one message (ReplayClient's flush_every)."""
    shard = ReplayShard(spec, cfg.replay_capacity)
    i = 0

    def insert():
        nonlocal i
        i += 1
        return shard.insert([payloads[i % len(payloads)]])["accepted"]

    n, elapsed = timed(seconds, insert)
    per_payload = shard.counters["sequences"] / i
    size = sum(len(p) for p in payloads) / len(payloads) / per_payload
    table.add(
        "replay",
        "shard insert (payloads of 32 stacked, decode + validate)",
        n / elapsed,
        "sequences/s",
        note=f"{size / 1024:.1f} KiB per sequence",
    )
    while shard.size < shard.capacity:
        insert()
    B = cfg.batch_size
    online = int(round(B * (1.0 - cfg.replay_fraction)))
    n, elapsed = timed(seconds, lambda: B if shard.sample(online, B - online) is not None else 0)
    table.add(
        "replay",
        f"shard sample (B={B}, encode)",
        n / elapsed,
        "sequences/s",
        note=f"{n / elapsed / B:,.0f} batches/s",
    )
    client = ReplayClient([shard], spec)
    n, elapsed = timed(
        seconds,
        lambda: B if client.result(client.request(B, cfg.replay_fraction)) is not None else 0,
    )
    table.add(
        "replay",
        f"sample + decode via ReplayClient (B={B})",
        n / elapsed,
        "sequences/s",
        note=f"{n / elapsed / B:,.0f} batches/s",
    )
    return shard


def learner_rate(
    cfg: Config,
    spec: SequenceSpec,
    shard: ReplayShard,
    device: str,
    seconds: float,
    table: Table,
    batch_size: int = 0,
    compile: str = "auto",
) -> float:
    cfg = dataclasses.replace(
        cfg, device=device, batch_size=batch_size or cfg.batch_size, compile=compile
    )
    batches = BatchStream(ReplayClient([shard], spec), cfg.batch_size, cfg.replay_fraction)
    learner = Learner(cfg, spec, batches, WeightPublisher(WeightStore()))
    t = time.perf_counter()
    # warm-up (allocations, CUDA context, torch.compile)
    learner.train(3)
    warm_s = time.perf_counter() - t
    if device == "cuda":
        torch.cuda.synchronize()
    per_call = max(1, 640 // cfg.batch_size)

    def step():
        done = learner.train(per_call)["learner/updates_in_call"]
        if device == "cuda":
            torch.cuda.synchronize()
        return done

    steps, elapsed = timed(seconds, step)
    B, T = cfg.batch_size, cfg.sequence_length
    rate = steps * B * T / elapsed
    name = torch.cuda.get_device_name() if device == "cuda" else f"{cfg.torch_threads} thread(s)"
    how = "compiled" if learner.compiled else "eager"
    table.add(
        "learner",
        f"sampled transitions, {device}, {how} (B={B} x T={T})",
        rate,
        "transitions/s",
        note=f"{steps / elapsed:,.1f} updates/s; {name}; first 3 updates {warm_s:.1f} s",
        device=device,
        compiled=learner.compiled,
        batch_size=B,
    )
    return rate


def publish_in_process(cfg: Config, info, reps: int, table: Table) -> None:
    store, net = WeightStore(), build_network(cfg.network_spec(info))
    publisher, client = WeightPublisher(store), WeightClient(store)
    times = []
    for v in range(reps):
        t = time.perf_counter()
        publisher.publish(v, net)
        got = client.poll()
        times.append(time.perf_counter() - t)
        assert got is not None and got[0] == v
    size = len(store.latest()[1])
    table.add(
        "weights",
        "publish + fetch, in-process (median)",
        1000 * statistics.median(times),
        "ms",
        note=f"{size / 1024:.1f} KiB payload; p90 {1000 * np.percentile(times, 90):.2f} ms",
    )


class Fetcher:
    """A Ray actor with a WeightClient, as a self-play actor holds one."""

    def __init__(self, store):
        from transport.ray_weights import RayWeightClient

        self.client = RayWeightClient(store)

    def ping(self) -> int:
        return 0

    def wait_for(self, version: int) -> int:
        while True:
            self.client.request()
            got = self.client.poll()
            if got is not None and got[0] >= version:
                return got[0]
            time.sleep(0.0002)


def publish_on_ray(cfg: Config, info, reps: int, table: Table) -> None:
    import ray

    store = ray.remote(num_cpus=0)(WeightStore).remote()
    fetcher = ray.remote(num_cpus=0)(Fetcher).remote(store)
    net = build_network(cfg.network_spec(info))
    from transport.ray_weights import MIN_REQUEST_INTERVAL_S, RayWeightPublisher

    publisher = RayWeightPublisher(store)
    ray.get(fetcher.ping.remote())
    trips, times = [], []
    for v in range(reps):
        t = time.perf_counter()
        ray.get(fetcher.ping.remote())
        trips.append(time.perf_counter() - t)
        t = time.perf_counter()
        publisher.publish(v, net)
        ray.get(fetcher.wait_for.remote(v))
        times.append(time.perf_counter() - t)
    table.add(
        "weights",
        "publish + fetch by another Ray actor (median)",
        1000 * statistics.median(times),
        "ms",
        note=f"p90 {1000 * np.percentile(times, 90):.2f} ms; includes one actor call round trip "
        f"({1000 * statistics.median(trips):.2f} ms) and the client's pause of up to "
        f"{1000 * MIN_REQUEST_INTERVAL_S:.0f} ms between requests",
    )
    ray.kill(fetcher)
    ray.kill(store)


# -- the run ------------------------------------------------------------------------------
def machine() -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return describe(("torch", "ray", "gymnasium", "numpy"), gpu)


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="short measurement windows (~1 minute in all)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="seconds per measurement (default 8, quick 1.5)"
    )
    parser.add_argument(
        "--actors", nargs="+", type=int, default=[1, 2, 4], help="actor counts on Ray"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="learner: CPU always; CUDA too with 'cuda', or with 'auto' when CUDA exists",
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument(
        "--no-cpu-learner", action="store_true", help="skip the CPU learner rows (GPU runs)"
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=tuple(PRESETS),
        default=["cartpole"],
        help="configs to measure (common/config.py PRESETS), each with its env, network and envs "
        "per actor; the replay, learner and weights rows use the first",
    )
    parser.add_argument(
        "--actor-rows-only",
        action="store_true",
        help="only the env, actor and EnvPool rows (no replay, learner or weights rows)",
    )
    parser.add_argument("--env", default=None, help="replaces each preset's env")
    parser.add_argument("--envs-per-actor", type=int, default=None)
    parser.add_argument("--num-replay-shards", type=int, default=1)
    parser.add_argument(
        "--learner-batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help="learner rows at these B (sequences per batch; default: the config's 64)",
    )
    parser.add_argument(
        "--learner-compile",
        nargs="+",
        choices=("auto", "on", "off"),
        default=["auto"],
        help="learner rows with torch.compile 'auto' (on CUDA only), 'on', 'off', or several",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    seconds = args.seconds or (1.5 if args.quick else 8.0)
    cpus = os.cpu_count() or 1
    table, begin = Table(), time.perf_counter()
    load_before = os.getloadavg()[0]
    runs = []  # (label, cfg, info, bare) per preset
    for preset in args.presets:
        cfg = Config(
            **{
                **PRESETS[preset],
                "preset": preset,
                "replay_ratio": 0.0,
                "num_replay_shards": args.num_replay_shards,
                "num_cpus": cpus,
                "dashboard": False,
            }
        )
        if args.env:
            cfg.env = args.env
        if args.envs_per_actor:
            cfg.envs_per_actor = args.envs_per_actor
        validate(cfg)
        info = envs_lib.describe(cfg.env)
        spec = SequenceSpec(cfg.sequence_length, info.obs_shape, info.obs_dtype, info.num_actions)
        label = f"[{preset}] " if len(args.presets) > 1 else ""
        print(
            f"throughput: {label}{cfg.env}, {cfg.envs_per_actor} envs per actor, {seconds:g} s per measurement, "
            f"{cpus} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        bare = bare_env(cfg, info, seconds, table, label)
        payloads = actor_in_process(cfg, info, spec, seconds, bare, table, label)
        if envs_lib.is_atari(cfg.env) and importlib.util.find_spec("envpool"):
            envpool_env(cfg, info, seconds, bare, cpus, table, label)
        runs.append((label, cfg, info, bare))
        if len(runs) > 1 or args.actor_rows_only:
            continue
        shard = replay_rates(cfg, spec, payloads, seconds / 2, table)
        devices = [] if args.no_cpu_learner else ["cpu"]
        if resolve_device(args.device).type == "cuda":
            devices.append("cuda")
        for device in devices:
            for compile in args.learner_compile:
                for batch_size in args.learner_batch_sizes or [cfg.batch_size]:
                    learner_rate(cfg, spec, shard, device, seconds, table, batch_size, compile)
        publish_in_process(cfg, info, 50 if args.quick else 200, table)
    if not args.no_ray:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        print(f"  (ray.init {time.perf_counter() - t:.1f} s)", flush=True)
        try:
            for label, cfg, info, bare in runs:
                actors_on_ray(
                    cfg, info, sorted(set(args.actors)), seconds, bare, cpus, table, label
                )
            if not args.actor_rows_only:
                publish_on_ray(runs[0][1], runs[0][2], 20 if args.quick else 100, table)
        finally:
            ray.shutdown()
    table.print()
    total, load_after = time.perf_counter() - begin, os.getloadavg()[0]
    print(
        f"\n{total:.0f} s in all on {cpus} CPUs ({platform.processor() or platform.machine()}); "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )
    if max(load_before, load_after) > cpus:
        print(
            f"warning: the machine was busy (load average above its {cpus} CPUs): other processes shared "
            "the cores, so these rates are low and noisy; run again on an idle machine"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "machine": machine(),
            "seconds_per_measurement": seconds,
            "load_average": [round(load_before, 2), round(load_after, 2)],
            "configs": {cfg.preset: dataclasses.asdict(cfg) for _, cfg, _, _ in runs},
            "rows": table.rows,
            "total_s": round(total, 1),
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
