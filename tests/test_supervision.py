"""Actor supervision (driver/supervision.py), pure Python: what the driver does when an actor's
call fails on Ray. driver/on_ray.py turns Ray's exceptions into (error name, died)."""

import collections

from driver import supervision
from driver.supervision import ActorSupervisor


def make():
    logged = []
    faults = collections.Counter()
    return ActorSupervisor(256, faults, logged.append), faults, logged


def test_a_restarting_actor_is_one_fault_retried_every_second(capsys):
    s, faults, logged = make()
    assert [s.failed(0, "ActorUnavailableError", died=False) for _ in range(3)] == [
        supervision.RETRY_S
    ] * 3
    assert faults == {"actor_failures": 1, "chunks_lost": 1}
    assert logged == [{"faults/actor_failures": 1, "faults/chunks_lost": 1}]
    assert capsys.readouterr().out == (
        "actor 0 failed (ActorUnavailableError); its chunk of <= 256 env steps is "
        "lost; retrying while Ray restarts it\n"
    )
    s.succeeded(0)
    # a new fault after a success
    assert s.failed(0, "ActorUnavailableError", died=False) == supervision.RETRY_S
    assert faults == {"actor_failures": 2, "chunks_lost": 2}


def test_an_actor_dead_twice_in_a_row_is_replaced_and_counted():
    s, faults, _ = make()
    assert s.failed(1, "ActorDiedError", died=True) == supervision.RETRY_S
    assert s.failed(1, "ActorDiedError", died=True) is None  # replace it
    assert faults == {"actor_failures": 1, "chunks_lost": 1, "actors_replaced": 1}
    # the new one: counted afresh
    assert s.failed(1, "ActorDiedError", died=True) == supervision.RETRY_S
    assert faults["actors_replaced"] == 1


def test_only_a_success_between_deaths_resets_their_count():
    s, faults, _ = make()
    s.failed(2, "ActorDiedError", died=True)
    s.succeeded(2)
    assert s.failed(2, "ActorDiedError", died=True) == supervision.RETRY_S
    s.failed(3, "ActorDiedError", died=True)
    assert s.failed(3, "ActorUnavailableError", died=False) == supervision.RETRY_S
    # an unavailable call between them resets nothing
    assert s.failed(3, "ActorDiedError", died=True) is None
    assert faults["actor_failures"] == 3 and faults["actors_replaced"] == 1
