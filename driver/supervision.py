"""Actor supervision on Ray: what the driver does when an actor's call fails. In-process an
actor's error is the run's error, so only driver/on_ray.py uses this.

The first failure after a success is one fault: the chunk in flight (at most
actor_chunk_steps env steps) is lost, and the line is printed once. While Ray restarts the
actor its calls fail fast as unavailable (retried every RETRY_S); an actor that is dead for
good (Ray said it died DEAD_AFTER times with no success between: its restarts are used up) is
replaced by a new one.
"""

import collections
from collections.abc import Callable

RETRY_S = 1.0  # seconds between calls to an actor that Ray is restarting
DEAD_AFTER = 2  # "died" failures with no success between that make an actor dead for good


class ActorSupervisor:
    def __init__(
        self, chunk_steps: int, faults: collections.Counter, log_faults: Callable[[dict], None]
    ):
        """faults: the run's fault counters (actor_failures, chunks_lost, actors_replaced), updated
        here; log_faults(scalars) records them as faults/<name> metrics."""
        self.chunk_steps, self.faults, self.log_faults = chunk_steps, faults, log_faults
        self.failing = collections.Counter()  # consecutive failed calls per actor index
        # "died" failures since the last success, per actor index
        self.died = collections.Counter()

    def succeeded(self, index: int) -> None:
        self.failing[index] = self.died[index] = 0

    def failed(self, index: int, error: str, died: bool) -> float | None:
        """A call of actor `index` failed with exception type `error`; `died`: Ray says the actor
        is dead (not restarting). Returns the seconds to wait before calling it again, or None
        when it must be replaced by a new actor (counted in actors_replaced)."""
        if not self.failing[index]:
            self.faults["actor_failures"] += 1
            self.faults["chunks_lost"] += 1
            print(
                f"actor {index} failed ({error}); its chunk of <= {self.chunk_steps} "
                "env steps is lost; retrying while Ray restarts it",
                flush=True,
            )
            self.log_faults({f"faults/{key}": value for key, value in self.faults.items()})
        self.failing[index] += 1
        if died:
            self.died[index] += 1
            if self.died[index] >= DEAD_AFTER:
                print(f"actor {index} is dead for good; starting a new one", flush=True)
                self.faults["actors_replaced"] += 1
                self.died[index] = 0
                return None
        return RETRY_S
