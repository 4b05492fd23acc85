"""One replay shard: a FIFO ring of sequences plus a queue of fresh ones.

Shape legend: C capacity (sequences), B sampled sequences, T steps, O observation shape.

Inserts arrive as msgpack payloads (common/sequence.py) and are validated before
anything is written; a bad payload is counted in `rejected` and dropped, so stored
data is never touched by it. `sample(num_online, num_replay)` returns a batch made of
the oldest not-yet-served fresh sequences plus uniformly drawn stored ones.

The shard owns the pacing of actors and learner (replay/rate_limit.py): every insert
answers with the room left for more, which actors hold on, and a sample the rate limit
does not allow yet returns None, which the learner waits on.
"""

import collections
import copy
import uuid

import numpy as np

from common.codec import CodecError
from common.ray_metrics import Recorder
from common.sequence import SequenceSpec, decode_sequences, encode_batch
from replay.rate_limit import SampleToInsertRatio


class ReplayShard:
    """Plain class: build it directly (tests, --in-process) or wrap it with ray.remote."""

    def __init__(
        self,
        spec: SequenceSpec,
        capacity: int,
        seed: int = 0,
        index: int = 0,
        rate_limit: SampleToInsertRatio | None = None,
    ):
        """rate_limit: None = samples only wait for enough stored sequences (tests, benchmarks)."""
        self.spec, self.capacity, self.index = spec, capacity, index
        self.rate_limit = copy.deepcopy(rate_limit)  # its own counters, also in-process
        self.storage = spec.empty(leading=(capacity,))
        self.insert_id = np.full(capacity, -1, dtype=np.int64)  # which insert lives in each slot
        # (slot, insert_id), oldest first; an entry older than `capacity` inserts has been
        # overwritten, so maxlen bounds the queue when nothing is served online
        self.fresh = collections.deque(maxlen=capacity)
        self.rng = np.random.default_rng(seed)
        self.size = 0
        self.inserts = 0
        self.counters = collections.Counter()
        # tells a restarted shard (Ray re-runs __init__) from this one
        self.started = uuid.uuid4().hex
        self.metrics = Recorder("replay", index)

    def __repr__(self) -> str:
        return f"ReplayShard({self.index})"

    def insert(self, payloads: list[bytes]) -> dict:
        """Validate and store each payload (one sequence, or N stacked: common/sequence.py);
        returns {'accepted': sequences stored, 'rejected': payloads dropped whole, 'room':
        sequences the rate limit takes before senders must hold}. Data that arrives is
        always stored: the limit acts on the next insert, through `room`."""
        accepted = rejected = 0
        evictions = self.counters["evictions"]
        for payload in payloads:
            try:
                rows = decode_sequences(payload, self.spec)
            except CodecError:
                rejected += 1
                continue
            accepted += self._store(rows)
        self.counters["rejected"] += rejected
        self.metrics.inc("inserts", accepted)
        self.metrics.inc("rejected", rejected)
        self.metrics.inc("evictions", self.counters["evictions"] - evictions)
        self.metrics.set("size", self.size)
        self.metrics.set("fill", self.size / self.capacity)
        return {"accepted": accepted, "rejected": rejected, "room": self.room()}

    def room(self) -> float:
        """Sequences the rate limit lets in now (<= 0: senders hold); unlimited without one."""
        return self.rate_limit.room() if self.rate_limit else float("inf")

    def _store(self, rows) -> int:
        """Write N sequences [N, ...] into the ring (the oldest overwritten first); returns N."""
        n = total = len(rows["mask"])
        if n > self.capacity:  # only the newest `capacity` can survive anyway
            self.inserts += n - self.capacity
            self.counters["evictions"] += n - self.capacity
            rows = {name: array[-self.capacity :] for name, array in rows.items()}
            n = self.capacity
        ids = np.arange(self.inserts, self.inserts + n)
        slots = ids % self.capacity
        for name, array in rows.items():
            self.storage[name][slots] = array
        self.insert_id[slots] = ids
        self.fresh.extend(zip(slots.tolist(), ids.tolist()))
        self.counters["evictions"] += max(0, self.size + n - self.capacity)
        self.size = min(self.size + n, self.capacity)
        self.inserts += n
        self.counters["sequences"] += total
        if self.rate_limit:
            self.rate_limit.inserted(total)
        return total

    def sample(self, num_online: int, num_replay: int) -> bytes | None:
        """Batch payload of num_online fresh + num_replay uniform sequences, or None when
        fewer than num_online + num_replay sequences are stored or the rate limit holds the
        learner back. Fresh sequences missing from the queue are replaced by uniform draws."""
        total = num_online + num_replay
        if self.size < total or total == 0:
            return None
        if self.rate_limit:
            if not self.rate_limit.can_sample(total, self.size):
                self.counters["rate_limited_samples"] += 1
                return None
            self.rate_limit.sampled(total)
        slots = []
        while self.fresh and len(slots) < num_online:
            slot, insert_id = self.fresh.popleft()
            if self.insert_id[slot] == insert_id:  # not overwritten since
                slots.append(slot)
        self.counters["online_sampled"] += len(slots)
        slots.extend(self.rng.integers(0, self.size, size=total - len(slots)))
        self.counters["samples"] += total
        self.metrics.inc("samples", total)
        return encode_batch({name: array[slots] for name, array in self.storage.items()})

    def stats(self) -> dict:
        """Counters, levels (size, fresh) and `started` (tells a restarted shard from this one)."""
        return {
            "shard": self.index,
            "started": self.started,
            "size": self.size,
            "fresh": len(self.fresh),
            **self.counters,
        }
