"""Sample-to-insert rate limiter of one replay shard, in the spirit of Reverb's
`SampleToInsertRatio` (Cassirer et al. 2021, arXiv 2102.04736).

Counted in sequences: I inserted, S sampled, n stored; r = samples per insert (the
replay ratio), m = minimum stored before sampling, e = error buffer (in samples).

  diff = r * I - S                        sampled sequences still "owed" to the data
  insert allowed while   diff < r * m + e      (always for the first m: room >= m - I below)
  sample of k allowed if n >= m  and  diff - k >= r * m - e

So after the first m inserts the learner samples r sequences per inserted one, at most e
samples ahead of the actors or behind them. Inserts and a sample of k can never both be
held when 2 e >= k: held inserts mean diff >= r m + e, a held sample diff < r m - e + k.
A shard that restarts empty starts from I = S = 0: it takes inserts at once and serves
samples once it holds m again, so a lost shard never deadlocks actors or learner. Pure
Python; the shard owns one.
"""

from dataclasses import dataclass


@dataclass
class SampleToInsertRatio:
    samples_per_insert: float  # r
    min_size: int  # m
    error_buffer: float  # e, in sampled sequences
    inserts: int = 0  # I
    samples: int = 0  # S

    def __post_init__(self):
        if self.samples_per_insert <= 0 or self.min_size < 1 or self.error_buffer < 0:
            raise ValueError(
                f"rate limiter needs r > 0, m >= 1, e >= 0; got r={self.samples_per_insert}, "
                f"m={self.min_size}, e={self.error_buffer}"
            )

    @property
    def diff(self) -> float:
        return self.samples_per_insert * self.inserts - self.samples

    def room(self) -> float:
        """Sequences that may still be inserted now: (r m + e - diff) / r = m - I + (e + S) / r
        (<= 0: hold), so never less than the m - I still missing from the minimum."""
        r = self.samples_per_insert
        return (r * self.min_size + self.error_buffer - self.diff) / r

    def can_sample(self, num: int, size: int) -> bool:
        r, m = self.samples_per_insert, self.min_size
        return size >= m and self.diff - num >= r * m - self.error_buffer

    def inserted(self, num: int) -> None:
        self.inserts += num

    def sampled(self, num: int) -> None:
        self.samples += num
