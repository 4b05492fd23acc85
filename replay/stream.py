"""The learner's batches as a stream: replay.request/result with one request kept ahead
(prefetch: the next batch is sampled while this one trains), re-asking while replay holds
batches back, and replay's totals refreshed so a restarted shard's share moves to the others.
The learner only takes the next batch (`next`) and trains on it; the wiring builds the stream
over the placement's replay client and hands it to the learner."""

import time

from common.waits import BATCH_RETRY_S, TOTALS_REFRESH_S, TOTALS_REFRESH_UPDATES
from transport.seams import BatchSource


class BatchStream:
    def __init__(self, replay: BatchSource, batch_size: int, replay_fraction: float):
        self.replay, self.batch_size, self.replay_fraction = replay, batch_size, replay_fraction
        self.pending = None
        # replay's counters (replay/client.py totals), read at each learner call and as needed
        self.totals, self.refreshed, self.since_refresh = {}, 0.0, 0

    def refresh_totals(self) -> dict:
        """replay.totals() now (the shares of a batch follow which shards hold data)."""
        self.totals, self.refreshed, self.since_refresh = (
            self.replay.totals(),
            time.perf_counter(),
            0,
        )
        return self.totals

    def restore_totals(self, counts: dict[str, int]) -> None:
        """Replay's counters as a checkpoint stored them (replay/client.py)."""
        self.replay.restore_totals(counts)
        self.refresh_totals()

    def _ask(self) -> dict | None:
        if self.pending is None:
            self.pending = self.replay.request(self.batch_size, self.replay_fraction)
        batch = self.replay.result(self.pending)
        self.pending = self.replay.request(self.batch_size, self.replay_fraction)
        return batch

    def next(self, deadline: float) -> dict | None:
        """The next batch, or None once replay has held it back until `deadline`
        (time.perf_counter() seconds; a past deadline still gets one look at once, as the
        first answer may predate new data)."""
        held = False
        while True:
            batch = self._ask()
            if batch is not None:
                self.since_refresh += 1
                if self.since_refresh == TOTALS_REFRESH_UPDATES:
                    self.refresh_totals()
                return batch
            if held and time.perf_counter() >= deadline:
                return None
            if held:
                time.sleep(BATCH_RETRY_S)
            held = True
            if time.perf_counter() - self.refreshed >= TOTALS_REFRESH_S:
                self.refresh_totals()
