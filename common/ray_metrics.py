"""Ray metrics at the edge: the one module that knows about `ray.util.metrics`.

The plain classes (actor, replay shard, learner) and the driver's trainer hold a `Recorder` and call
`self.metrics.inc("env_steps", n)`, `.set(...)` or `.observe(...)`. Inside a Ray
process the calls go to Ray Counters, Gauges and Histograms named
`muesli_<component>_<name>` and tagged `component` and `index`; Ray exports them on
the node's metrics port (Prometheus text, about every 10 s; Ray prefixes `ray_` and a
Counter gets `_total`), which feeds the dashboard's Metrics view and Grafana. Outside
Ray (tests that build components directly, `--in-process`) every call is a no-op, and
ray is never imported.

Names are checked against SPECS in both cases, so a typo fails in the Ray-free tests.
"""

import sys

SECONDS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]

# (component, name) -> (kind, description, histogram boundaries or None, extra tag keys)
SPECS: dict[tuple[str, str], tuple[str, str, list | None, tuple[str, ...]]] = {
    ("actor", "env_steps"): ("counter", "Env steps taken, summed over the actor's envs", None, ()),
    ("actor", "episodes"): ("counter", "Episodes finished", None, ()),
    ("actor", "episode_return"): (
        "gauge",
        "Mean return of episodes finished in the last collect call",
        None,
        (),
    ),
    ("actor", "env_steps_per_s"): (
        "gauge",
        "Env steps per second over the last collect call",
        None,
        (),
    ),
    ("actor", "inference_ms"): (
        "gauge",
        "Mean time of one batched policy forward pass (ms)",
        None,
        (),
    ),
    ("actor", "rate_limit_wait_s"): (
        "counter",
        "Seconds spent waiting for the learner (rate limit)",
        None,
        (),
    ),
    ("actor", "env_errors"): (
        "counter",
        "Exceptions raised by the actor's envs (each cost that env's episode)",
        None,
        (),
    ),
    ("actor", "nonfinite_sequences"): (
        "counter",
        "Sequences dropped for NaN or inf in their observations, rewards or probabilities",
        None,
        (),
    ),
    ("actor", "weight_pulls"): ("counter", "Weight versions fetched from the store", None, ()),
    ("actor", "policy_version"): (
        "gauge",
        "Learner step of the weights the actor acts with",
        None,
        (),
    ),
    ("replay", "inserts"): ("counter", "Sequences accepted", None, ()),
    ("replay", "rejected"): ("counter", "Payloads rejected by validation", None, ()),
    ("replay", "evictions"): ("counter", "Stored sequences overwritten (FIFO)", None, ()),
    ("replay", "samples"): ("counter", "Sequences served to the learner", None, ()),
    ("replay", "size"): ("gauge", "Sequences stored", None, ()),
    ("replay", "fill"): ("gauge", "Sequences stored over the shard's capacity (0 to 1)", None, ()),
    ("learner", "steps"): (
        "counter",
        "Learner updates run (skipped non-finite ones included)",
        None,
        (),
    ),
    ("learner", "transitions_per_s"): (
        "gauge",
        "Transitions (B x T) trained on per second, last call",
        None,
        (),
    ),
    ("learner", "loss"): ("gauge", "Mean loss over the last call, by term", None, ("term",)),
    ("learner", "batch_wait_s"): (
        "histogram",
        "Seconds waiting for a batch from replay",
        SECONDS,
        (),
    ),
    ("learner", "policy_lag"): (
        "gauge",
        "Learner step minus the acting version of trained data",
        None,
        (),
    ),
    ("learner", "publishes"): ("counter", "Weight publications", None, ()),
    # A gauge, not a counter: Ray counters refuse 0, and a fault count of 0 is the news.
    ("driver", "faults"): (
        "gauge",
        "Faults so far in the run, by kind (summary.json's faults)",
        None,
        ("kind",),
    ),
}

_ray_metrics: dict[str, object] = {}  # one Ray metric object per name and process


def in_ray() -> bool:
    """Whether this process is connected to Ray (a Ray worker, or a driver after ray.init)."""
    ray = sys.modules.get("ray")  # not imported -> certainly not a Ray process
    return ray is not None and ray.is_initialized()


class Recorder:
    """Records one component's metrics (`component` in SPECS, `index` its number)."""

    def __init__(self, component: str, index: int = 0):
        self.component = component
        self.tags = {"component": component, "index": str(index)}
        self._live: bool | None = None  # decided on first use: after ray.init, in the worker

    def inc(self, name: str, value: float = 1.0, **tags) -> None:
        self._record("counter", name, float(value), tags)

    def set(self, name: str, value: float, **tags) -> None:
        self._record("gauge", name, float(value), tags)

    def observe(self, name: str, value: float, **tags) -> None:
        self._record("histogram", name, float(value), tags)

    def _record(self, kind: str, name: str, value: float, tags: dict) -> None:
        spec = SPECS.get((self.component, name))
        if spec is None or spec[0] != kind:
            raise KeyError(
                f"no {kind} {name!r} for component {self.component!r} in common/ray_metrics.SPECS"
            )
        if self._live is None:
            self._live = in_ray()
        if self._live and (value > 0 or kind != "counter"):  # Ray counters refuse 0
            record = getattr(_metric(self.component, name, spec), _METHOD[kind])
            record(value, tags={**self.tags, **tags})


_METHOD = {"counter": "inc", "gauge": "set", "histogram": "observe"}


def _metric(component: str, name: str, spec):
    full = f"muesli_{component}_{name}"
    if full not in _ray_metrics:
        _ray_metrics[full] = build_ray_metric(full, spec)
    return _ray_metrics[full]


def build_ray_metric(full_name: str, spec):
    """The Ray Counter, Gauge or Histogram for one SPECS entry (needs no running Ray)."""
    from ray.util import metrics

    kind, description, boundaries, extra = spec
    keys = ("component", "index") + extra
    if kind == "counter":
        return metrics.Counter(full_name, description, tag_keys=keys)
    if kind == "gauge":
        return metrics.Gauge(full_name, description, tag_keys=keys)
    return metrics.Histogram(full_name, description, boundaries=boundaries, tag_keys=keys)
