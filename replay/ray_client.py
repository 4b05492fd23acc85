"""The replay shards' client through Ray handles (replay/client.py has the shared logic and the
in-process client).

Inserts go out without waiting for the answer, with a bound on calls in flight, so a slow shard
pushes back on the actor. Shards may die (Ray restarts them empty): a failed call is counted,
never raised, so the actor keeps playing and the learner waits for the restarted shard to refill.
"""

import time

import ray

from common import waits
from common.sequence import SequenceSpec
from replay.client import ReplayClient

SHARD_LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)
# a held actor asks the shards again after 1 ms, doubling up to this


class RayReplayClient(ReplayClient):
    def __init__(self, shards, spec: SequenceSpec, flush_every: int = 32, max_inflight: int = 4):
        super().__init__(shards, spec, flush_every)
        self.max_inflight = max_inflight
        # (ref, shard index, sequences) of inserts not yet answered
        self._inflight = []

    def _failed(self, exc: Exception, what: str) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            print(
                f"replay client: {what} failed ({type(exc).__name__}); "
                f"{self.failures} shard call(s) failed so far",
                flush=True,
            )

    def _ask(self, shard, method: str, *args):
        return getattr(shard, method).remote(*args)

    def _answer(self, ref, what: str, default=None):
        """ray.get of ref; on a dead or restarting shard, `default` (and the failure counted)."""
        try:
            return ray.get(ref)
        except SHARD_LOST as exc:
            self._failed(exc, what)
            return default

    # -- actor side ---------------------------------------------------------------------
    def _send(self, index: int, payload: bytes, count: int) -> None:
        self._inflight.append((self.shards[index].insert.remote([payload]), index, count))
        if len(self._inflight) > self.max_inflight:
            self._settle(len(self._inflight) - self.max_inflight)

    def _settle(self, num: int, timeout=None) -> None:
        """Wait for `num` of the inserts in flight (fewer after `timeout`) and take the shards'
        answers: a shard's room is what it said, less what was sent to it after that call."""
        refs = [ref for ref, _, _ in self._inflight]
        done, _ = ray.wait(refs, num_returns=min(num, len(refs)), timeout=timeout)
        done = set(done)
        for ref, index, _ in self._inflight:
            if ref in done:
                answer = self._answer(ref, "insert")
                if answer is not None:
                    later = sum(n for r, i, n in self._inflight if i == index and r not in done)
                    self.room[index] = answer["room"] - later
        self._inflight = [call for call in self._inflight if call[0] not in done]

    def has_room(self) -> bool:
        """The count kept here first, and only when that says no, the answers that have arrived since."""
        if max(self.room) <= 0 and self._inflight:
            self._settle(len(self._inflight), timeout=0)
        return super().has_room()

    def wait_for_room(self, timeout_s: float) -> bool:
        """Flush, then ask the shards for their room until one has some or `timeout_s` passes.
        A shard that does not answer counts as full."""
        self.flush()
        deadline, pause = time.monotonic() + timeout_s, 0.001
        while True:
            if self._inflight:
                self._settle(len(self._inflight), timeout=max(0.0, deadline - time.monotonic()))
            else:
                refs = [shard.room.remote() for shard in self.shards]
                ready, _ = ray.wait(
                    refs, num_returns=len(refs), timeout=max(0.0, deadline - time.monotonic())
                )
                ready = set(ready)
                self.room = [
                    self._answer(ref, "room", 0.0) if ref in ready else 0.0 for ref in refs
                ]
            if max(self.room) > 0 or time.monotonic() >= deadline:
                return max(self.room) > 0
            time.sleep(pause)
            pause = min(2 * pause, waits.ROOM_POLL_MAX_S)
