"""Test helper: a ReplayShard that also keeps every payload it was sent."""

from replay.shard import ReplayShard


class RecordingShard(ReplayShard):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.payloads = []

    def insert(self, payloads, *args, **kwargs):
        self.payloads.extend(payloads)
        return super().insert(payloads, *args, **kwargs)
