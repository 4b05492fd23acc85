"""What keeps a Ray actor's loop from blocking: collect calls queued behind each other
(driver/on_ray.py RayRounds), weight requests at most every MIN_REQUEST_INTERVAL_S
(transport/ray_weights.py). One local Ray for the module."""

import collections
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common import codec
from driver.supervision import ActorSupervisor
from transport.weight_store import WeightStore

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class CountingStore(WeightStore):
    def __init__(self):
        super().__init__()
        self.asked = 0

    def latest(self):
        self.asked += 1
        return super().latest()

    def times_asked(self) -> int:
        return self.asked


def test_weight_requests_go_out_at_most_every_interval(monkeypatch):
    from transport import ray_weights

    store = ray.remote(CountingStore).remote()
    ray.get(store.publish.remote(3, [ray.put(codec.encode_weights({"w": np.ones(2, np.float32)}))]))
    client = ray_weights.RayWeightClient(store)
    client.request()
    ray.wait([client._pending])
    assert client.poll()[0] == 3
    now = time.monotonic()
    monkeypatch.setattr(
        ray_weights.time, "monotonic", lambda: now + ray_weights.MIN_REQUEST_INTERVAL_S / 2
    )
    client.request()
    assert client._pending is None and ray.get(store.times_asked.remote()) == 1
    monkeypatch.setattr(
        ray_weights.time, "monotonic", lambda: now + ray_weights.MIN_REQUEST_INTERVAL_S * 1.01
    )
    client.request()
    ray.wait([client._pending])
    assert ray.get(store.times_asked.remote()) == 2


class Player:
    """A stand-in self-play actor: each collect call takes 50 ms."""

    def collect(self, steps: int) -> dict:
        time.sleep(0.05)
        return {"env_steps": steps}

    def crash(self) -> None:
        os._exit(1)


class Trainer:
    def train(self, steps: int, wait_s: float) -> dict:
        time.sleep(wait_s)
        return {}


def test_queued_calls_of_a_restarting_actor_are_one_failure_and_it_is_fed_again():
    """With PIPELINE calls queued, an actor whose process dies fails all of them (Ray says died);
    that is one failure, not the DEAD_AFTER died failures that make an actor dead for good, and
    once Ray has restarted it, it gets calls again."""
    from common.waits import ACTOR_PIPELINE as PIPELINE
    from driver.on_ray import RayRounds

    assert PIPELINE == 2
    player = ray.remote(max_restarts=1)(Player).remote()
    learner = ray.remote(Trainer).remote()
    components = SimpleNamespace(actors=[player], learner=learner)
    faults = collections.Counter()
    supervisor = ActorSupervisor(64, faults, lambda scalars: None)
    rounds = RayRounds(components, 64, supervisor)
    assert list(rounds.pending.values()) == [0, 0]
    while not any(kind == "actor" for kind, _ in rounds.reports()):
        pass
    player.crash.remote()  # its process dies: Ray restarts it
    deadline, after = time.monotonic() + 20, 0
    while time.monotonic() < deadline and after < 3:
        after += sum(kind == "actor" for kind, _ in rounds.reports() if faults["actor_failures"])
    assert (faults["actor_failures"], faults["actors_replaced"], after) == (1, 0, 3)
    assert components.actors[0] is player and list(rounds.pending.values()) == [0, 0]


def test_an_actor_killed_for_good_is_replaced_and_the_new_one_gets_its_calls():
    """Killed for good with PIPELINE calls queued: Ray says died (DEAD_AFTER = 2 deaths with no
    success between make it dead for good), the driver retries it after RETRY_S, replaces it,
    and queues PIPELINE calls on the new one."""
    from driver.on_ray import RayRounds

    player = ray.remote(Player).remote()
    components = SimpleNamespace(
        actors=[player],
        learner=ray.remote(Trainer).remote(),
        new_actor=lambda index: ray.remote(Player).remote(),
    )
    faults = collections.Counter()
    rounds = RayRounds(components, 64, ActorSupervisor(64, faults, lambda scalars: None))
    while not any(kind == "actor" for kind, _ in rounds.reports()):
        pass
    ray.kill(player, no_restart=True)
    deadline, after = time.monotonic() + 20, 0
    while time.monotonic() < deadline and after < 3:
        after += sum(kind == "actor" for kind, _ in rounds.reports())
    assert (faults["actor_failures"], faults["actors_replaced"], after) == (1, 1, 3)
    assert components.actors[0] is not player and list(rounds.pending.values()) == [0, 0]
