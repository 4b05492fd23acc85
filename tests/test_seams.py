"""Every placement and client class against its Protocol (transport/seams.py): each member the
Protocol names exists, and each method takes the Protocol's parameters, by name and in order."""

import inspect

import pytest

from driver.in_process import InProcess
from driver.on_ray import OnRay
from replay.client import ReplayClient
from replay.ray_client import RayReplayClient
from replay.stream import BatchStream
from transport import seams
from transport.ray_weights import RayWeightClient, RayWeightPublisher
from transport.weights import WeightClient, WeightPublisher


def members(protocol) -> dict:
    """{name: function or None (a data member)} of what the Protocol itself declares."""
    own = {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and callable(value)
    }
    return {**dict.fromkeys(getattr(protocol, "__annotations__", {})), **own}


def mismatches(cls, protocol) -> list:
    """What cls lacks or takes differently from protocol (an empty list: it fits)."""
    problems = []
    for name, wanted in members(protocol).items():
        if wanted is None:  # a data member: a class attribute, or set in __init__
            source = inspect.getsource(cls) + "".join(
                inspect.getsource(b) for b in cls.__mro__[1:-1]
            )
            if (
                not hasattr(cls, name)
                and f"self.{name} =" not in source
                and f"self.{name}," not in source
            ):
                problems.append(f"{name}: missing")
            continue
        have = getattr(cls, name, None)
        if not callable(have):
            problems.append(f"{name}(): missing")
            continue
        want = list(inspect.signature(wanted).parameters)
        got = list(inspect.signature(have).parameters)
        if got[: len(want)] != want or any(
            inspect.signature(have).parameters[p].default is inspect.Parameter.empty
            for p in got[len(want) :]
        ):
            problems.append(f"{name}{tuple(got)} is not {name}{tuple(want)}")
    return problems


IMPLEMENTATIONS = [
    (ReplayClient, seams.ReplayWriter),
    (ReplayClient, seams.BatchSource),
    (RayReplayClient, seams.ReplayWriter),
    (RayReplayClient, seams.BatchSource),
    (BatchStream, seams.Batches),
    (WeightClient, seams.WeightSource),
    (RayWeightClient, seams.WeightSource),
    (WeightPublisher, seams.WeightSink),
    (RayWeightPublisher, seams.WeightSink),
    (InProcess, seams.Placement),
    (OnRay, seams.Placement),
]


@pytest.mark.parametrize(
    "cls,protocol", IMPLEMENTATIONS, ids=[f"{c.__name__}-{p.__name__}" for c, p in IMPLEMENTATIONS]
)
def test_each_implementation_fits_its_protocol(cls, protocol):
    assert mismatches(cls, protocol) == []


def test_the_check_catches_a_missing_method_and_a_renamed_parameter():
    class NoFlush:
        def add(self, sequence): ...
        def has_room(self): ...
        def wait_for_room(self, seconds): ...

    assert mismatches(NoFlush, seams.ReplayWriter) == [
        "flush(): missing",
        "wait_for_room('self', 'seconds') is not wait_for_room('self', 'timeout_s')",
    ]


def test_the_placements_are_chosen_from_the_table():
    from driver import wiring

    assert set(wiring.PLACEMENTS) == {True, False}
    assert type(wiring.place(wiring.Config(in_process=True, num_cpus=1))) is InProcess
