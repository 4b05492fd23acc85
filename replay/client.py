"""Spreads inserts and samples over replay shards, in-process or through Ray handles.

Inserts are buffered and sent one list per shard per flush (round-robin over
shards), with a bound on calls in flight so a slow shard pushes back on the actor.
A batch of B sequences asks every shard for its share and concatenates the answers.

Shards may die (Ray restarts them empty): a failed call is counted, never raised, so
the actor keeps playing and the learner waits for the restarted shard to refill.
Counters (`totals`) stay monotonic across a shard restart: when a shard comes back as
a new instance, what it had counted is carried in an offset. Env steps and episodes
are each sender's running totals (the highest any shard has seen), so neither a lost
insert nor a restarted shard loses them and the learner's throttle never falls behind
what the actors did. `restore_totals` seeds the offsets on resume.
"""
import uuid
from typing import Dict, List, Optional

import numpy as np

from common.sequence import SequenceSpec, decode_batch, encode_sequences


LEVELS = ("size", "fresh")                  # stats() keys summed over shards but not carried over a restart
NOT_SUMMED = ("shard", "started", "sources")


def split(total: int, parts: int) -> List[int]:
    """[total // parts + 1] * (total % parts) + [total // parts] * rest."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


class ReplayClient:
    def __init__(self, shards, spec: SequenceSpec, remote: bool = False, max_inflight: int = 4,
                 flush_every: int = 32, source: str = ""):
        """source: the sender's name in the shards' running totals, unique by default (an actor
        names each incarnation itself, so a restarted actor counts from 0 under a new name)."""
        self.shards, self.spec, self.remote = list(shards), spec, remote
        self.source = source or f"client-{uuid.uuid4().hex[:8]}"
        self.max_inflight, self.flush_every = max_inflight, flush_every
        self._buffer: List[bytes] = []
        self._sequences: List[Dict[str, np.ndarray]] = []
        self._next_shard = 0
        self._inflight = []
        self.failures = 0                       # shard calls that raised (dead or restarting shard)
        self.lost_payloads = 0                  # payloads (up to flush_every sequences each) in failed inserts
        self.lost_stored = 0                    # sequences a restarted shard no longer holds
        self._last: List[dict] = [{} for _ in self.shards]
        self._answering: List[bool] = [True for _ in self.shards]   # did its last stats() call answer
        self._offset: Dict[str, int] = {}
        self.sources: Dict[str, List[int]] = {}    # learner side: sender -> highest [env_steps, episodes] seen

    def _failed(self, exc: Exception, what: str) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            print(f"replay client: {what} failed ({type(exc).__name__}); "
                  f"{self.failures} shard call(s) failed so far", flush=True)

    def _get(self, refs, what: str, default=None):
        """ray.get of refs; on a dead or restarting shard, `default` (and the failure counted)."""
        import ray
        try:
            return ray.get(refs)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            self._failed(exc, what)
            return default

    # -- actor side ---------------------------------------------------------------------
    def add(self, sequence: Dict[str, np.ndarray]) -> None:
        """Buffer one sequence; every `flush_every` they go out stacked in one payload."""
        self._sequences.append(sequence)
        if len(self._sequences) >= self.flush_every:
            self.flush()

    def insert(self, payload: bytes) -> None:
        """Buffer an encoded payload as it is (one sequence or several)."""
        self._buffer.append(payload)
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self, env_steps: Optional[int] = None, episodes: Optional[int] = None) -> None:
        """Send buffered payloads to one shard (round-robin), with this sender's running env-step
        and episode totals when given: then a call goes out even with nothing buffered, so the
        totals keep reaching the learner while the actor waits on it."""
        if self._sequences:
            self._buffer.append(encode_sequences(self._sequences))
            self._sequences = []
        if not self._buffer and env_steps is None and episodes is None:
            return
        shard = self.shards[self._next_shard]
        self._next_shard = (self._next_shard + 1) % len(self.shards)
        payloads, self._buffer = self._buffer, []
        counts = dict(env_steps=env_steps or 0, episodes=episodes or 0)
        if not self.remote:
            shard.insert(payloads, self.source, **counts)
            return
        import ray
        self._inflight.append((shard.insert.remote(payloads, self.source, **counts), len(payloads)))
        if len(self._inflight) > self.max_inflight:
            refs = [ref for ref, _ in self._inflight]
            done, _ = ray.wait(refs, num_returns=len(refs) - self.max_inflight)
            done = set(done)
            for ref, count in self._inflight:
                if ref in done and self._get(ref, "insert") is None:
                    self.lost_payloads += count
            self._inflight = [(ref, n) for ref, n in self._inflight if ref not in done]

    # -- learner side -------------------------------------------------------------------
    def shares(self, batch_size: int) -> List[int]:
        """Sequences asked of each shard: an even split, except that shards last seen holding
        less than their share (one restarted empty, say) or not answering (dead, restarting,
        or stuck on a lost node) are passed over while others can serve the whole batch, so
        one lost shard never stalls the learner."""
        sizes = split(batch_size, len(self.shards))
        short = [not answering or last.get("size", n) < n
                 for answering, last, n in zip(self._answering, self._last, sizes)]
        if any(short) and not all(short):
            healthy = [i for i, is_short in enumerate(short) if not is_short]
            sizes = [0] * len(self.shards)
            for i, n in zip(healthy, split(batch_size, len(healthy))):
                sizes[i] = n
        return sizes

    def request(self, batch_size: int, replay_fraction: float):
        """Start fetching a batch; pass the result to `result`. Each shard serves its share."""
        calls = []
        for shard, n in zip(self.shards, self.shares(batch_size)):
            if n:
                online = int(round(n * (1.0 - replay_fraction)))
                calls.append(shard.sample.remote(online, n - online) if self.remote else shard.sample(online, n - online))
        return calls

    def result(self, handle) -> Optional[Dict[str, np.ndarray]]:
        """Batch-major arrays [B, ...], or None when some shard is not yet full enough."""
        if self.remote:
            handle = self._get(handle, "sample")
        if handle is None or any(payload is None for payload in handle):
            return None
        parts = [decode_batch(payload, self.spec) for payload in handle]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def sample(self, batch_size: int, replay_fraction: float) -> Optional[Dict[str, np.ndarray]]:
        return self.result(self.request(batch_size, replay_fraction))

    def stats(self) -> List[Optional[dict]]:
        """Each shard's stats(); None for a shard that did not answer."""
        if not self.remote:
            return [shard.stats() for shard in self.shards]
        refs = [shard.stats.remote() for shard in self.shards]
        return [self._get(ref, "stats") for ref in refs]

    def totals(self) -> dict:
        """Counters summed over shards (inserts, samples, ...: monotonic across shard restarts and
        resumes), the current levels `size` and `fresh`, and env_steps / episodes summed over
        senders' running totals. A shard that does not answer counts with its last known figures."""
        out: Dict[str, int] = dict(self._offset)
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
            for source, counts in s.get("sources", {}).items():
                seen = self.sources.setdefault(source, [0, 0])
                seen[:] = [max(a, b) for a, b in zip(seen, counts)]
            for key, value in s.items():
                if key not in NOT_SUMMED:
                    out[key] = out.get(key, 0) + value
        for column, key in enumerate(("env_steps", "episodes")):
            out[key] = out.get(key, 0) + sum(seen[column] for seen in self.sources.values())
        out["lost_stored"] = self.lost_stored
        out["failed_calls"] = self.failures
        return out

    def restore_totals(self, counts: Dict[str, int]) -> None:
        """Resume, on a fresh client: counters continue from a checkpoint's totals (which hold the
        senders' running totals summed; size is not restored)."""
        self._offset = {k: int(v) for k, v in counts.items() if k not in LEVELS + ("lost_stored", "failed_calls")}
        self.sources = {}
