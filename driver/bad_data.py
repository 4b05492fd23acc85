"""Non-finite data as a counted fault: the sequences actors dropped for NaN or inf in their
observations, rewards or probabilities (actors/actor.py), counted per kind in summary.json's
faults (nonfinite_obs, nonfinite_reward, nonfinite_probabilities; a sequence counts once per
kind it holds, and once in dropped_sequences), shown in the progress line once they pass
SHOW_SHARE of the sequences, and the run stopped (BadData) once most recent data is bad:
a float64 env beyond float32's range gives inf in every observation, and a run on it would
play on for its whole budget with nothing to learn from.
"""

import collections

from common.sequence import NONFINITE_FIELDS

SHOW_SHARE = 0.01  # the progress line tells of dropped sequences from 1% of all on
STOP_SHARE = 0.5  # more than half of the recent sequences bad: the run stops
WINDOW_REPORTS = 20  # "recent": the last 20 actor reports (chunks)...
MIN_SEQUENCES = 100  # ...once they hold at least 100 sequences


class BadData(RuntimeError):
    """Most of the recent data held non-finite values: the run cannot learn from it."""

    reason = "bad data"  # summary.json's stop_reason


class BadDataWatch:
    def __init__(self, faults: collections.Counter):
        """faults: the run's fault counters, updated here."""
        self.faults = faults
        self.recent = collections.deque(maxlen=WINDOW_REPORTS)  # (sent, dropped) per report
        self.sent = self.dropped = 0

    def counts(self) -> str:
        return ", ".join(
            f"{kind} {self.faults[f'nonfinite_{kind}']:,}" for kind in NONFINITE_FIELDS.values()
        )

    def add(self, sent: int, dropped: int, nonfinite: dict) -> bool:
        """One actor report: sequences sent and dropped, {kind: sequences}. Returns whether any
        was dropped; raises BadData when most of the recent ones were."""
        self.sent, self.dropped = self.sent + sent, self.dropped + dropped
        self.recent.append((sent, dropped))
        if dropped:
            self.faults["dropped_sequences"] += dropped
            for kind, n in nonfinite.items():
                self.faults[f"nonfinite_{kind}"] += n
        recent_sent, recent_dropped = map(sum, zip(*self.recent))
        recent = recent_sent + recent_dropped
        if recent >= MIN_SEQUENCES and recent_dropped > STOP_SHARE * recent:
            raise BadData(
                f"{recent_dropped / recent:.0%} of the last {recent:,} sequences held NaN or inf "
                f"(sequences dropped per kind: {self.counts()}); the env gives non-finite values "
                "(a float64 beyond float32's range becomes inf), nothing to learn from"
            )
        return bool(dropped)

    def progress_note(self) -> str:
        """What the progress line adds once SHOW_SHARE of all sequences were dropped ('' before)."""
        total = self.sent + self.dropped
        if not total or self.dropped < SHOW_SHARE * total:
            return ""
        return f" | bad data {self.dropped / total:.1%} dropped ({self.counts()})"
