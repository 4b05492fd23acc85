"""Every component a plain object in this process (--in-process): Sample Factory's serial mode.

A round runs every actor's chunk, then as many learner updates as replay allows, in turn, so
a run is deterministic for a seed. Clients call the components directly (transport/weights.py,
replay/client.py); nothing can fail apart from the components themselves, whose errors are
the run's.
"""
import concurrent.futures
import time

from common import placement
from replay.client import ReplayClient
from transport.weights import WeightClient, WeightPublisher


class Inline:
    """An executor that runs each job at once in the caller's thread (evaluation in-process)."""

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self) -> None:
        pass


class SerialRounds:
    def __init__(self, components, chunk_steps: int):
        self.c, self.chunk_steps = components, chunk_steps

    def reports(self):
        """("actor", stats) of each actor's chunk, then ("learner", metrics) of one learner.train."""
        for actor in self.c.actors:
            yield "actor", actor.collect(self.chunk_steps)
        yield "learner", self.c.learner.train(10**9, wait_s=0.0)

    def last_reports(self):
        return ()


class InProcess:
    """Where components run: here. Same methods as driver/on_ray.OnRay."""

    def __init__(self, cfg):
        self.num_actors = placement.in_process_actors(cfg)

    def new(self, cls, *args):
        return cls(*args)

    def call(self, handle, method: str, *args):
        return getattr(handle, method)(*args)

    replay_client = ReplayClient
    weight_client = WeightClient
    weight_publisher = WeightPublisher

    def ask_components(self, components):
        """Every component here is up once built: [(role, "", now)] for each (OnRay's form)."""
        now = time.time()
        roles = ["store"] + ["shard"] * len(components.shards) + ["learner"] + ["actor"] * len(components.actors)
        return lambda: [(role, "", now) for role in roles]

    def node_map(self, answers) -> dict:
        return {}

    def describe(self, nodes: dict) -> str:
        return ""

    def rounds(self, components, chunk_steps: int, supervisor) -> SerialRounds:
        return SerialRounds(components, chunk_steps)

    def evaluator(self) -> Inline:
        return Inline()
