"""Spreads inserts and samples over replay shards, in-process or through Ray handles.

Inserts are buffered and sent one list per shard per flush (round-robin over
shards), with a bound on calls in flight so a slow shard pushes back on the actor.
A batch of B sequences asks every shard for its share and concatenates the answers.
"""
from typing import Dict, List, Optional

import numpy as np

from common.sequence import SequenceSpec, decode_batch


def split(total: int, parts: int) -> List[int]:
    """[total // parts + 1] * (total % parts) + [total // parts] * rest."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


class ReplayClient:
    def __init__(self, shards, spec: SequenceSpec, remote: bool = False, max_inflight: int = 4,
                 flush_every: int = 32):
        self.shards, self.spec, self.remote = list(shards), spec, remote
        self.max_inflight, self.flush_every = max_inflight, flush_every
        self._buffer: List[bytes] = []
        self._next_shard = 0
        self._inflight = []

    # -- actor side ---------------------------------------------------------------------
    def insert(self, payload: bytes) -> None:
        self._buffer.append(payload)
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self, env_steps: int = 0, episodes: int = 0) -> None:
        """Send buffered payloads (and the actor's new step / episode counts) to one shard."""
        if not self._buffer and not env_steps and not episodes:
            return
        shard = self.shards[self._next_shard]
        self._next_shard = (self._next_shard + 1) % len(self.shards)
        payloads, self._buffer = self._buffer, []
        if not self.remote:
            shard.insert(payloads, env_steps, episodes)
            return
        import ray
        self._inflight.append(shard.insert.remote(payloads, env_steps, episodes))
        if len(self._inflight) > self.max_inflight:
            _, self._inflight = ray.wait(self._inflight, num_returns=len(self._inflight) - self.max_inflight)

    # -- learner side -------------------------------------------------------------------
    def request(self, batch_size: int, replay_fraction: float):
        """Start fetching a batch; pass the result to `result`. Shard i serves its share."""
        sizes = split(batch_size, len(self.shards))
        calls = []
        for shard, n in zip(self.shards, sizes):
            online = int(round(n * (1.0 - replay_fraction)))
            calls.append(shard.sample.remote(online, n - online) if self.remote else shard.sample(online, n - online))
        return calls

    def result(self, handle) -> Optional[Dict[str, np.ndarray]]:
        """Batch-major arrays [B, ...], or None when some shard is not yet full enough."""
        if self.remote:
            import ray
            handle = ray.get(handle)
        if any(payload is None for payload in handle):
            return None
        parts = [decode_batch(payload, self.spec) for payload in handle]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def sample(self, batch_size: int, replay_fraction: float) -> Optional[Dict[str, np.ndarray]]:
        return self.result(self.request(batch_size, replay_fraction))

    def stats(self) -> List[dict]:
        if self.remote:
            import ray
            return ray.get([shard.stats.remote() for shard in self.shards])
        return [shard.stats() for shard in self.shards]

    def totals(self) -> dict:
        """Summed counters over shards (env_steps, episodes, sequences, size, rejected, ...)."""
        out: Dict[str, int] = {}
        for s in self.stats():
            for key, value in s.items():
                if key != "shard":
                    out[key] = out.get(key, 0) + value
        return out
