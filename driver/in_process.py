"""Every component a plain object in this process (--in-process): Sample Factory's serial mode.

A round runs every actor's chunk, then as many learner updates as replay allows, in turn, so
a run is deterministic for a seed (unless one round's learning runs past waits.ROUND_LEARNER_S).
Clients call the components directly (transport/weights.py, replay/client.py); nothing can fail
apart from the components themselves, whose errors are the run's.
"""

import concurrent.futures
import time

from common import waits
from driver import placement
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
    def __init__(self, components, chunk_steps: int, stop=lambda: ""):
        """stop: returns a stop reason, or "" while the run goes on (Trainer.should_stop)."""
        self.c, self.chunk_steps, self.stop = components, chunk_steps, stop
        self.limited = bool(components.cfg.replay_ratio)

    def reports(self):
        """("actor", stats) of each actor's chunk, then ("learner", metrics) of each learner call
        of waits.LEARNER_CALL_STEPS updates, until a call makes fewer (replay held the learner back: the
        replay ratio's share of this round is done), a stop is due, waits.ROUND_LEARNER_S have passed (a
        ratio so high that replay never holds it back), or after one call with --replay-ratio 0
        (no limit: the learner's turn is one call, as a learner call on Ray)."""
        for actor in self.c.actors:
            yield "actor", actor.collect(self.chunk_steps)
        start = time.monotonic()
        while True:
            metrics = self.c.learner.train(waits.LEARNER_CALL_STEPS, wait_s=0.0)
            yield "learner", metrics  # taken by the trainer before the stop check below
            if (
                not self.limited
                or metrics["learner/updates_in_call"] < waits.LEARNER_CALL_STEPS
                or self.stop()
                or time.monotonic() - start >= waits.ROUND_LEARNER_S
            ):
                return

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
        roles = (
            ["store"]
            + ["shard"] * len(components.shards)
            + ["learner"]
            + ["actor"] * len(components.actors)
        )
        return lambda: [(role, "", now) for role in roles]

    def node_map(self, answers) -> dict:
        return {}

    def describe(self, nodes: dict) -> str:
        return ""

    def install_dashboard(self) -> str:
        return ""  # no Ray, no Grafana folder

    def rounds(self, components, chunk_steps: int, supervisor, stop) -> SerialRounds:
        return SerialRounds(components, chunk_steps, stop)

    def evaluator(self) -> Inline:
        return Inline()
