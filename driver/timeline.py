"""When a run reached its start-up and exit milestones, in seconds since its process started:
summary.json's "timeline" (bench/startup.py reads it). No torch, no Ray: any process can use it.

Milestones (those a run passes): ray_up (ray.init and the placement plan done), trainer (run
directory and logger made), store_up / shard_up / learner_up / actor_up (the first of each kind
whose constructor has returned), first_env_step (the first actor chunk began), first_learner_step
(about: the first learner call that updated, less its update time), solved (the solving
evaluation ended), export (policy.pt2 written), finish (the run loop ended), final_checkpoint,
plot (learning_curve.png), summary (summary.json written). The process's exit comes after that; bench/startup.py measures it from outside.
"""

import os
import time


def process_start() -> float:
    """Wall-clock time (time.time()) at which this process started: from /proc on Linux (10 ms
    resolution), else the time this module was first imported."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "(name)", which may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()


class Timeline:
    """Milestones as seconds since `start` (wall clock: times taken in other processes on the
    same machine compare); the first mark of a name counts."""

    def __init__(self, start: float | None = None):
        self.start = process_start() if start is None else start
        self.marks: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        """Record milestone `name` at wall time `at` (default now) unless already recorded."""
        if name not in self.marks:
            self.marks[name] = round((time.time() if at is None else at) - self.start, 3)

    def as_dict(self) -> dict:
        """{"start_unix": wall time of the start, milestone: seconds since it, ...} in time order."""
        return {
            "start_unix": round(self.start, 3),
            **dict(sorted(self.marks.items(), key=lambda kv: kv[1])),
        }
