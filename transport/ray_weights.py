"""The weight transport through Ray (transport/weights.py has the in-process one).

The learner `ray.put`s each payload once and hands the store (a Ray actor) a reference wrapped
in a list, so Ray passes the reference instead of resolving it; every actor then reads the
same object from the object store.
"""

import math
import time

import ray

from transport.weights import WeightClient, WeightPublisher

MIN_REQUEST_INTERVAL_S = 0.05  # at most 20 weight requests a second per client
STORE_LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)


class RayWeightPublisher(WeightPublisher):
    def _send(self, version: int, payload: bytes) -> None:
        self.store.publish.remote(version, [ray.put(payload)])


class RayWeightClient(WeightClient):
    """Keeps one request to the store in flight and picks the answer up once it has arrived.
    A request goes out at most every MIN_REQUEST_INTERVAL_S: an actor asks every
    --weight-pull-every env steps, which at CartPole's speed is ~100 times a second, while
    the learner publishes a few times a second, and each ask is a Ray call on the actor's core."""

    def __init__(self, store):
        super().__init__(store)
        self._pending = None
        self._asked_at = -math.inf

    def _bytes(self, payload) -> bytes:
        return ray.get(payload[0])

    def request(self) -> None:
        """Ask for the newest weights (no-op while a request is in flight)."""
        now = time.monotonic()
        if self._pending is None and now - self._asked_at >= MIN_REQUEST_INTERVAL_S:
            self._pending, self._asked_at = self.store.latest.remote(), now

    def poll(self):
        if self._pending is None:
            return None
        ready, _ = ray.wait([self._pending], timeout=0)
        if not ready:
            return None
        pending, self._pending = self._pending, None
        try:
            return self._accept(*ray.get(pending))
        except STORE_LOST:
            # The store is restarting (its node left): ask again later; the learner republishes.
            return None

    def newest(self, timeout_s: float = 10.0):
        if self._pending is None:
            self._pending, self._asked_at = self.store.latest.remote(), time.monotonic()
        ray.wait([self._pending], timeout=timeout_s)
        return self.poll()
