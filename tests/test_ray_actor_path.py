"""What keeps a Ray actor's loop from blocking (issue 19): collect calls queued behind each other
(driver/on_ray.py RayRounds), weight requests at most every MIN_REQUEST_INTERVAL_S
(transport/ray_weights.py), inserts in large payloads that the end of a collect call does not
send (replay/ray_client.py). One local Ray for the module."""
import collections
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common import codec
from common.sequence import SequenceSpec
from driver.supervision import ActorSupervisor
from replay.rate_limit import SampleToInsertRatio
from replay.shard import ReplayShard
from transport.weight_store import WeightStore

ray = pytest.importorskip("ray")

CARTPOLE = SequenceSpec(10, (4,), "float32", 2)
PONG = SequenceSpec(20, (4, 84, 84), "uint8", 18)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sequence(spec: SequenceSpec) -> dict:
    seq = spec.empty()
    seq["mask"][:] = True
    seq["behaviour"][:] = 1.0 / spec.num_actions
    return seq


def test_payload_size_follows_the_sequence_bytes():
    """Pong: 21 x 4 x 84 x 84 uint8 frames (592,704 B) + action, reward (80 B each), behaviour
    (1,440 B), three bool masks (60 B), version (160 B) = 594,524 B a sequence: 32 MiB hold 56."""
    from replay.ray_client import RayReplayClient
    assert RayReplayClient([], PONG).flush_every == 56
    assert RayReplayClient([], CARTPOLE).flush_every == 128      # capped by RAY_FLUSH_EVERY
    assert RayReplayClient([], CARTPOLE, flush_every=5).flush_every == 5


def test_inserts_go_out_whole_and_the_end_of_a_chunk_sends_nothing():
    from replay.ray_client import RayReplayClient
    shard = ray.remote(ReplayShard).remote(CARTPOLE, 1000)
    client = RayReplayClient([shard], CARTPOLE)
    for _ in range(130):
        client.add(sequence(CARTPOLE))
    client.chunk_done()
    ray.get([ref for ref, _, _ in client._inflight])
    stats = ray.get(shard.stats.remote())
    assert (stats["sequences"], len(client._sequences)) == (128, 2)
    client.flush()
    ray.get([ref for ref, _, _ in client._inflight])
    assert ray.get(shard.stats.remote())["sequences"] == 130


def test_a_buffer_that_fills_the_room_left_is_sent_at_once():
    """Rate limit r = 1, m = 2, e = 1: room 3 at the start; after one insert the shard says 2,
    so the second buffered sequence goes out without waiting for 128."""
    from replay.ray_client import RayReplayClient
    shard = ray.remote(ReplayShard).remote(CARTPOLE, 1000, 0, 0, SampleToInsertRatio(1.0, 2, 1.0))
    client = RayReplayClient([shard], CARTPOLE)
    client.add(sequence(CARTPOLE))
    assert client.wait_for_room(5.0) and client.room == [2.0]
    client.add(sequence(CARTPOLE))
    assert len(client._sequences) == 1
    client.add(sequence(CARTPOLE))
    assert client._sequences == []
    ray.get([ref for ref, _, _ in client._inflight])
    assert ray.get(shard.stats.remote())["sequences"] == 3


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
    monkeypatch.setattr(ray_weights.time, "monotonic", lambda: now + ray_weights.MIN_REQUEST_INTERVAL_S / 2)
    client.request()
    assert client._pending is None and ray.get(store.times_asked.remote()) == 1
    monkeypatch.setattr(ray_weights.time, "monotonic", lambda: now + ray_weights.MIN_REQUEST_INTERVAL_S * 1.01)
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
    from driver.on_ray import PIPELINE, RayRounds
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
    player.crash.remote()                                   # its process dies: Ray restarts it
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
    components = SimpleNamespace(actors=[player], learner=ray.remote(Trainer).remote(),
                                 new_actor=lambda index: ray.remote(Player).remote())
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
