"""The seams between the rooms, as Protocols: what each side may call on the other.

Every component gets its clients at construction and calls only these methods, so the same
component runs in-process or on Ray with the client classes of the placement (replay/client.py
and replay/ray_client.py; transport/weights.py and transport/ray_weights.py). tests/test_seams.py
checks every implementation against its Protocol, method by method and parameter by parameter.
"""

from typing import Any, Protocol

import numpy as np
import torch


class ReplayWriter(Protocol):
    """What an actor calls on replay."""

    def add(self, sequence: dict[str, np.ndarray]) -> None: ...

    def flush(self) -> None: ...

    def has_room(self) -> bool: ...

    def wait_for_room(self, timeout_s: float) -> bool: ...


class BatchSource(Protocol):
    """What the learner calls on replay: ask for a batch, then take it (None: not yet)."""

    def request(self, batch_size: int, replay_fraction: float) -> Any: ...

    def result(self, handle) -> dict[str, np.ndarray] | None: ...

    def totals(self) -> dict: ...

    def restore_totals(self, counts: dict[str, int]) -> None: ...


class Batches(Protocol):
    """What the learner calls for its batches (replay/stream.BatchStream over a BatchSource)."""

    totals: dict  # replay's counters as last read

    def next(self, deadline: float) -> dict[str, np.ndarray] | None: ...

    def refresh_totals(self) -> dict: ...

    def restore_totals(self, counts: dict[str, int]) -> None: ...


class WeightSink(Protocol):
    """What the learner calls to publish its weights."""

    def publish(self, version: int, module: torch.nn.Module) -> None: ...


class WeightSource(Protocol):
    """What an actor (and the driver's evaluation) calls to get the newest weights."""

    pulls: int  # weight sets taken so far

    def request(self) -> None: ...

    def poll(self) -> tuple[int, dict[str, np.ndarray]] | None: ...

    def newest(self, timeout_s: float = 10.0) -> tuple[int, dict[str, np.ndarray]] | None: ...


class Rounds(Protocol):
    """The driver's loop over the components' reports (driver/trainer.py)."""

    def reports(self): ...

    def last_reports(self): ...


class Placement(Protocol):
    """Where the components run (driver/in_process.InProcess, driver/on_ray.OnRay): builds and
    calls them and hands out the clients of its transport."""

    num_actors: int
    replay_client: type  # (shards, spec) -> ReplayWriter and BatchSource
    weight_client: type  # (store) -> WeightSource
    weight_publisher: type  # (store) -> WeightSink

    def new(self, cls, *args): ...

    def call(self, handle, method: str, *args): ...

    def ask_components(self, components): ...

    def node_map(self, answers) -> dict: ...

    def describe(self, nodes: dict) -> str: ...

    def install_dashboard(self) -> str: ...

    def rounds(self, components, chunk_steps: int, supervisor, stop) -> Rounds: ...

    def evaluator(self): ...
