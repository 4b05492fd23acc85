"""Spreads inserts and samples over replay shards. `ReplayClient` calls shards that are plain
objects in this process; replay/ray_client.py has the same client through Ray handles.

Inserts are buffered and sent one list per shard per flush (round-robin over shards).
A batch of B sequences asks every shard for its share and concatenates the answers.

Pacing: each shard answers an insert with the room its rate limit has left
(replay/rate_limit.py). The client counts down what it sent since, flushes to the next
shard with room, and `has_room` tells the actor whether to step or hold; a held actor
asks the shards again (`wait_for_room`). A sample the limit holds back comes back None.

Counters (`totals`) stay monotonic across a shard restart: when a shard comes back as
a new instance, what it had counted is carried in an offset; `restore_totals` seeds
the offsets on resume.
"""

import numpy as np

from common.sequence import SequenceSpec, decode_batch, encode_sequences
from common.split import split

# stats() keys summed over shards but not carried over a restart
LEVELS = ("size", "fresh")
NOT_SUMMED = ("shard", "started")


class ReplayClient:
    """The shards' client for actors (add, flush, has_room, wait_for_room) and the learner
    (request/result, totals). In-process: every call answers at once and never fails."""

    def __init__(self, shards, spec: SequenceSpec, flush_every: int = 32):
        self.shards, self.spec, self.flush_every = list(shards), spec, flush_every
        self._sequences: list[dict[str, np.ndarray]] = []
        self._next_shard = 0
        # shard calls that raised (through Ray: a dead or restarting shard)
        self.failures = 0
        self.lost_stored = 0  # sequences a restarted shard no longer holds
        self._last: list[dict] = [{} for _ in self.shards]
        # did its last stats() call answer
        self._answering: list[bool] = [True for _ in self.shards]
        self._offset: dict[str, int] = {}
        # Actor side: each shard's room as it last answered, less the sequences sent to it since.
        self.room: list[float] = [float("inf")] * len(self.shards)
        # Learner side: the shares of the batch being assembled that have arrived (shard -> arrays).
        self._parts: dict[int, dict[str, np.ndarray]] = {}

    def _ask(self, shard, method: str, *args):
        """Start a call on a shard; its answer comes from `_answer`. In-process: the answer itself."""
        return getattr(shard, method)(*args)

    def _answer(self, asked, what: str, default=None):
        """The answer of a call `_ask` started (through Ray `default` for a shard that failed)."""
        return asked

    # -- actor side ---------------------------------------------------------------------
    def add(self, sequence: dict[str, np.ndarray]) -> None:
        """Buffer one sequence; every `flush_every` they go out stacked in one payload."""
        self._sequences.append(sequence)
        if len(self._sequences) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Send the buffered sequences, stacked in one payload, to the next shard (round-robin)
        that has room, or to the next one if none has (data is never held back: the actor
        holds instead)."""
        if not self._sequences:
            return
        count, payload = len(self._sequences), encode_sequences(self._sequences)
        self._sequences = []
        order = [(self._next_shard + k) % len(self.shards) for k in range(len(self.shards))]
        index = next((i for i in order if self.room[i] > 0), order[0])
        self._next_shard = (index + 1) % len(self.shards)
        self.room[index] -= count
        self._send(index, payload, count)

    def _send(self, index: int, payload: bytes, count: int) -> None:
        """Insert `payload` (count sequences) into shard `index`; its answer is that shard's room."""
        self.room[index] = self.shards[index].insert([payload])["room"]

    def has_room(self) -> bool:
        """Whether some shard takes more data now (as far as its answers so far tell)."""
        return max(self.room) > 0

    def wait_for_room(self, timeout_s: float) -> bool:
        """Held by every shard's rate limit: flush what is buffered, then ask the shards for their
        room (in-process nothing moves while we wait: one look). Returns has_room()."""
        self.flush()
        self.room = [shard.room() for shard in self.shards]
        return self.has_room()

    # -- learner side -------------------------------------------------------------------
    def shares(self, batch_size: int) -> list[int]:
        """Sequences asked of each shard: an even split, except that shards last seen holding
        less than their share (one restarted empty, say) or not answering (dead, restarting,
        or stuck on a lost node) are passed over while others can serve the whole batch, so
        one lost shard never stalls the learner."""
        sizes = split(batch_size, len(self.shards))
        short = [
            not answering or last.get("size", n) < n
            for answering, last, n in zip(self._answering, self._last, sizes)
        ]
        if any(short) and not all(short):
            healthy = [i for i, is_short in enumerate(short) if not is_short]
            sizes = [0] * len(self.shards)
            for i, n in zip(healthy, split(batch_size, len(healthy))):
                sizes[i] = n
        return sizes

    def request(self, batch_size: int, replay_fraction: float):
        """Start fetching a batch; pass the result to `result`. Each shard serves its share; when
        some shards served theirs and others held back (their rate limit, too little data), only
        the missing shares are asked again, so no sampled sequence is wasted (the shards counted
        it). Shares that no longer fit (a shard was passed over meanwhile) start the batch anew."""
        shares = self.shares(batch_size)
        if any(shares[i] != len(part["mask"]) for i, part in self._parts.items()):
            self._parts = {}
        calls = []
        for i, (shard, n) in enumerate(zip(self.shards, shares)):
            if n and i not in self._parts:
                online = int(round(n * (1.0 - replay_fraction)))
                calls.append((i, self._ask(shard, "sample", online, n - online)))
        return calls

    def result(self, handle) -> dict[str, np.ndarray] | None:
        """Batch-major arrays [B, ...] in shard order, or None while some shard's share is missing."""
        for i, answer in handle:
            payload = self._answer(answer, "sample")
            if payload is not None:
                self._parts[i] = decode_batch(payload, self.spec)
        missing = [i for i, _ in handle if i not in self._parts]
        if missing or not self._parts:
            return None
        parts, self._parts = [self._parts[i] for i in sorted(self._parts)], {}
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def stats(self) -> list[dict | None]:
        """Each shard's stats(); None for a shard that did not answer."""
        asked = [self._ask(shard, "stats") for shard in self.shards]
        return [self._answer(a, "stats") for a in asked]

    def totals(self) -> dict:
        """Counters summed over shards (inserts, samples, ...: monotonic across shard restarts and
        resumes) and the current levels `size` and `fresh`. A shard that does not answer counts
        with its last known figures."""
        out: dict[str, int] = dict(self._offset)
        for i, s in enumerate(self.stats()):
            last = self._last[i]
            self._answering[i] = s is not None
            if s is None:
                s = last
            elif last and s.get("started") != last.get("started"):
                # A new instance of the shard (restarted empty): keep what it had counted, note what it held.
                for key, value in last.items():
                    if key not in LEVELS + NOT_SUMMED:
                        self._offset[key] = self._offset.get(key, 0) + value
                        out[key] = out.get(key, 0) + value
                self.lost_stored += last.get("size", 0)
            self._last[i] = s
            for key, value in s.items():
                if key not in NOT_SUMMED:
                    out[key] = out.get(key, 0) + value
        out["lost_stored"] = self.lost_stored
        out["failed_calls"] = self.failures
        return out

    def restore_totals(self, counts: dict[str, int]) -> None:
        """Resume, on a fresh client: counters continue from a checkpoint's totals (levels such as
        size are not restored)."""
        self._offset = {
            k: int(v)
            for k, v in counts.items()
            if k not in LEVELS + ("lost_stored", "failed_calls")
        }
