"""The component wiring: the same parts built the same way wherever they run.

`place(cfg)` decides where: `InProcess` (driver/in_process.py: plain objects in this process)
or `OnRay` (driver/on_ray.py: Ray actors placed on the cluster this process is connected to).
A placement builds each part (`new`), calls it (`call`), and hands out the clients of the
matching transport (transport/, replay/client.py); `Components` asks it for nothing else, so
the components never learn where they run.
"""

import dataclasses
import math

from actors.actor import SelfPlayActor
from common.config import Config
from common.envs import EnvInfo, derive_seed
from common.sequence import SequenceSpec
from common.split import split
from driver.in_process import InProcess
from learner.learner import Learner
from replay.rate_limit import SampleToInsertRatio
from replay.shard import ReplayShard
from replay.stream import BatchStream
from transport.seams import Placement
from transport.weight_store import WeightStore


def on_ray(cfg: Config, connect: bool) -> Placement:
    """OnRay on the Ray this process is connected to, or first starts or joins (`connect`:
    launch.py; sweep trials are connected already)."""
    from driver import on_ray  # only a run on Ray imports Ray

    if connect:
        on_ray.start_ray(cfg)
    return on_ray.OnRay(cfg)


PLACEMENTS = {  # keyed by --in-process
    True: lambda cfg, connect: InProcess(cfg),
    False: on_ray,
}


def place(cfg: Config, connect: bool = False) -> Placement:
    """Where the components run (PLACEMENTS). OnRay's plan fixes the actor count;
    PlacementError if the cluster cannot host it."""
    return PLACEMENTS[cfg.in_process](cfg, connect)


def placed(cfg: Config, connect: bool = False):
    """(cfg with num_actors resolved, placement): what config.json records and the run uses."""
    where = place(cfg, connect)
    return dataclasses.replace(cfg, num_actors=where.num_actors), where


def shard_rate_limit(cfg: Config):
    """Each shard's share of the pacing (replay/rate_limit.py): the replay ratio, its share of the
    minimum to sample (at least its share of a batch), and an error buffer of the samples of its
    share of --replay-error-buffer sequences, so actors run at most about that many sequences ahead
    of the learner or behind it; never less than a whole batch, the most one shard is asked for at
    once, so actors and learner are never both held."""
    if not cfg.replay_ratio:
        return None
    per_shard = cfg.shard_min_size()
    buffer = cfg.replay_ratio * math.ceil(cfg.replay_error_buffer / cfg.num_replay_shards)
    return SampleToInsertRatio(cfg.replay_ratio, per_shard, max(buffer, cfg.batch_size))


class Components:
    """Weight store and replay shards at construction; `start` adds the learner and the actors
    (bench/throughput.py measures actors without a learner)."""

    def __init__(self, cfg: Config, info: EnvInfo, where: Placement):
        """cfg: with num_actors resolved (`placed`); where: InProcess or OnRay."""
        self.cfg, self.where = cfg, where
        self.spec = SequenceSpec.for_env(cfg.sequence_length, info)
        self.store = where.new(WeightStore)
        capacities = split(cfg.replay_capacity, cfg.num_replay_shards)
        limit = shard_rate_limit(cfg)
        self.shards = [
            where.new(
                ReplayShard, self.spec, capacities[i], derive_seed(cfg.seed, "replay", i), i, limit
            )
            for i in range(cfg.num_replay_shards)
        ]
        self.weights = where.weight_client(self.store)  # the driver's: evaluation snapshots
        self.learner, self.actors, self.run_state = None, [], {}

    def start(self, checkpoint_data: bytes = None) -> "Components":
        """The learner, restored from checkpoint_data when given (before the actors start, so they
        pace themselves from the restored version; the stored run_state is kept in
        `self.run_state`), then the actors."""
        w = self.where
        batches = BatchStream(
            w.replay_client(self.shards, self.spec), self.cfg.batch_size, self.cfg.replay_fraction
        )
        self.learner = w.new(Learner, self.cfg, self.spec, batches, w.weight_publisher(self.store))
        if checkpoint_data:
            self.run_state = self.call(self.learner, "load_checkpoint_bytes", checkpoint_data)
        self.actors = [self.new_actor(i) for i in range(self.cfg.num_actors)]
        return self

    def new_actor(self, index: int):
        w = self.where
        return w.new(
            SelfPlayActor,
            self.cfg,
            index,
            self.spec,
            w.replay_client(self.shards, self.spec),
            w.weight_client(self.store),
        )

    def call(self, handle, method: str, *args):
        """Blocking call on a component, wherever it runs."""
        return self.where.call(handle, method, *args)

    def ask_components(self):
        """Ask every component where it runs, without waiting; returns a function that waits for
        the answers, [(role, node_id, wall time its constructor was done by)] (the placement's
        ask_components)."""
        return self.where.ask_components(self)

    def node_map(self, answers) -> dict:
        """Where the components run, from ask_components' answers: {node_id: {"ip", "learner",
        "actors", "shards"}} on Ray, {} in-process."""
        return self.where.node_map(answers)
