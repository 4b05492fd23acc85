"""Where the components run on a Ray cluster: resource requests and scheduling strategies.

`plan` is a pure function of the config and the cluster's CPU/GPU counts, so it is
tested without Ray; driver/on_ray.py reads the counts from Ray and passes the returned
options to `ray.remote`.

- Learner: one GPU when the cluster has a free one and `--device` allows it (then it
  trains on CUDA), otherwise CPU; either way one CPU (half the cluster's when it has
  fewer than two) for its Python loop, batch decoding and the weight encoding.
- Self-play actors: SPREAD over the nodes. `--num-actors auto` (stored as 0) starts one
  actor per free CPU left after the learner's, each asking for one CPU; an explicit
  count shares the free CPUs (at most one each, at least 0.1). Where at least one whole
  CPU is free, an actor asks for 1/k of a CPU (k actors per CPU), so the actors fill the
  whole CPUs of any mix of nodes exactly: an even split such as 0.75 could leave a 0.5
  remainder on every node and one actor pending forever.
- Replay shards: SPREAD, no CPU reserved (they mostly wait on the network), so a shard
  never keeps an actor from starting.
- Weight store: no CPU reserved; Ray places it (it holds one object reference).
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

MIN_ACTOR_CPUS = 0.1


class PlacementError(ValueError):
    """The cluster cannot host the configuration (one line, names the flag)."""


@dataclass(frozen=True)
class Placement:
    num_actors: int
    learner: dict[str, Any]  # ray.remote options
    actor: dict[str, Any]
    shard: dict[str, Any]
    store: dict[str, Any]

    @property
    def learner_uses_gpu(self) -> bool:
        return self.learner.get("num_gpus", 0) > 0


def _floor(x: float, digits: int = 2) -> float:
    """Ray accepts fractional resources up to 1e-4; round down so requests never exceed supply."""
    scale = 10**digits
    return math.floor(x * scale + 1e-9) / scale


def plan(cfg, total_cpus: float, free_cpus: float, free_gpus: float) -> Placement:
    """Ray options for each component given the cluster's total and free resources.

    cfg needs `num_actors` (0 = auto) and `device` ('auto', 'cpu' or 'cuda')."""
    use_gpu = free_gpus >= 1 and cfg.device in ("auto", "cuda")
    if cfg.device == "cuda" and not use_gpu:
        raise PlacementError(
            "--device='cuda' was asked for but the Ray cluster has no free GPU; "
            "allowed here: 'auto', 'cpu'"
        )
    learner_cpus = _floor(min(1.0, total_cpus / 2))
    left = max(0.0, free_cpus - learner_cpus)
    if cfg.num_actors == 0:  # auto: one actor per free CPU
        num_actors = max(1, int(math.floor(left + 1e-9)))
        actor_cpus = 1.0 if left >= 1 else max(MIN_ACTOR_CPUS, _floor(left))
    else:
        num_actors = cfg.num_actors
        whole = int(math.floor(left + 1e-9))
        if whole >= 1:
            per_cpu = math.ceil(num_actors / whole)
            actor_cpus = max(MIN_ACTOR_CPUS, _floor(1.0 / per_cpu, 4))
        else:  # less than a CPU in all: one node's share, split evenly
            actor_cpus = max(MIN_ACTOR_CPUS, _floor(left / num_actors))
    return Placement(
        num_actors=num_actors,
        learner=dict(num_cpus=learner_cpus, num_gpus=1 if use_gpu else 0),
        actor=dict(num_cpus=actor_cpus, scheduling_strategy="SPREAD"),
        shard=dict(num_cpus=0, scheduling_strategy="SPREAD"),
        store=dict(num_cpus=0),
    )


def inside(plan: Placement, strategy) -> Placement:
    """The same requests, every component scheduled by `strategy` (a Ray Tune trial's placement group)."""
    options = lambda o: {**o, "scheduling_strategy": strategy}  # noqa: E731
    return dataclasses.replace(
        plan,
        learner=options(plan.learner),
        actor=options(plan.actor),
        shard=options(plan.shard),
        store=options(plan.store),
    )


def in_process_actors(cfg) -> int:
    """--num-actors auto without Ray: one actor (they take turns in one process anyway)."""
    return cfg.num_actors or 1
