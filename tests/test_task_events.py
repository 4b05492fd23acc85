"""The GCS keeps a record of every remote call that reports task events, and a run makes
thousands a minute: its memory grew ~10 MB/min without bound (docs/soak.md). The component
classes driver/on_ray.py builds report none unless --task-events asks for Ray's task list."""

import time

import pytest

from common.config import parse_config
from driver import placement
from driver.on_ray import remote_classes
from transport.weight_store import WeightStore

CALLS = 5


def store_class(ray, *flags):
    cfg = parse_config(["--num-cpus", "1", *flags])
    plan = placement.plan(cfg, 1.0, 1.0, 0.0)
    return remote_classes(cfg, plan)[WeightStore]


def calls_recorded(ray, actor_id: str) -> int:
    """WeightStore.latest calls of one actor in the GCS's task events (read from the GCS
    itself, so no dashboard is needed)."""
    events = ray._private.state.state._get_all_task_events()
    return sum(
        e.task_info.name == "WeightStore.latest" and e.task_info.actor_id.hex() == actor_id
        for e in events
    )


def test_component_calls_leave_no_task_record_unless_asked():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, address="local")
    try:
        quiet, recorded = store_class(ray).remote(), store_class(ray, "--task-events").remote()
        actor_id = lambda handle: ray.get(
            handle.__ray_call__.remote(  # noqa: E731
                lambda _self: ray.get_runtime_context().get_actor_id()
            )
        )
        ids = {"quiet": actor_id(quiet), "recorded": actor_id(recorded)}
        for handle in (quiet, recorded):
            ray.get([handle.latest.remote() for _ in range(CALLS)])
        # Workers report their events about every second: wait until the recorded store's calls
        # have all arrived; the quiet store's calls were reported (or not) by the same flushes.
        deadline = time.monotonic() + 60
        while calls_recorded(ray, ids["recorded"]) < CALLS and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)
        assert calls_recorded(ray, ids["recorded"]) == CALLS
        assert calls_recorded(ray, ids["quiet"]) == 0
    finally:
        ray.shutdown()
