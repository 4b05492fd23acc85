"""driver/in_process.py's serial rounds: the learner's turn in a round ends, whatever the replay
ratio (with 0, "no limit", or 1e9 replay never holds it back and `train(10**9)` never returned:
--max-seconds and Ctrl-C were ignored), and a stop is looked at between its calls."""

import contextlib
import json
import os
import signal
import threading
from types import SimpleNamespace

import pytest

import launch
from common import waits
from common.waits import LEARNER_CALL_STEPS
from driver import in_process
from driver.in_process import SerialRounds
from driver.trainer import Trainer


class NeverHeldLearner:
    """A learner that replay never holds back: every call makes all the updates it is asked for."""

    def __init__(self):
        self.calls = []

    def train(self, max_steps: int, wait_s: float = 0.0) -> dict:
        self.calls.append(max_steps)
        return {"learner/updates_in_call": max_steps, "learner/steps": sum(self.calls)}


def rounds_of(replay_ratio: float, stop=lambda: ""):
    actor = SimpleNamespace(collect=lambda steps: {"env_steps": steps})
    components = SimpleNamespace(
        cfg=SimpleNamespace(replay_ratio=replay_ratio), actors=[actor], learner=NeverHeldLearner()
    )
    return SerialRounds(components, 256, stop), components.learner


def test_without_a_limit_the_learners_turn_is_one_call():
    rounds, learner = rounds_of(0.0)
    reports = list(rounds.reports())
    assert [kind for kind, _ in reports] == ["actor", "learner"]
    assert learner.calls == [LEARNER_CALL_STEPS]


def test_a_stop_ends_the_learners_turn_at_the_next_call():
    asked = []

    def stop():
        asked.append(1)
        return "interrupted" if len(asked) == 3 else ""

    rounds, learner = rounds_of(1e9, stop)
    list(rounds.reports())
    assert learner.calls == [LEARNER_CALL_STEPS] * 3


def test_a_ratio_replay_never_reaches_ends_the_turn_after_round_learner_s(monkeypatch):
    clock = iter(range(0, 10**6, 3))  # each look at the clock: 3 s later
    monkeypatch.setattr(in_process.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(waits, "ROUND_LEARNER_S", 10.0)
    rounds, learner = rounds_of(
        1e9, stop=lambda: "a safety net for this test" if len(learner.calls) > 20 else ""
    )
    list(rounds.reports())
    assert learner.calls == [LEARNER_CALL_STEPS] * 4  # after 3, 6, 9, then 12 s >= 10 s


def test_replay_holding_the_learner_back_ends_its_turn():
    rounds, learner = rounds_of(38.4)
    learner.train = lambda max_steps, wait_s=0.0: (
        learner.calls.append(max_steps)
        or {"learner/updates_in_call": 7 if len(learner.calls) == 2 else max_steps}
    )
    list(rounds.reports())
    assert learner.calls == [LEARNER_CALL_STEPS] * 2


@contextlib.contextmanager
def a_hang_fails(after_s: float = 45.0):
    """SIGTERMs to this process from after_s on, one a second until launch.main returns: stuck in a
    round, it stops at once at the second (exit 143) and the test fails instead of stalling the suite."""
    returned = threading.Event()

    def stop_twice():
        while not returned.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            returned.wait(1.0)

    timer = threading.Timer(after_s, stop_twice)
    timer.start()
    try:
        yield
    finally:
        returned.set()
        timer.cancel()
        timer.join()


def run(tmp_path, *flags) -> tuple:
    with a_hang_fails():
        rc = launch.main(
            [
                "--in-process",
                "--solve-return",
                "1e9",
                "--eval-episodes",
                "2",
                "--sampled-eval-episodes",
                "1",
                "--run-root",
                str(tmp_path),
                "--run-name",
                "run",
                *flags,
            ]
        )
    return rc, json.loads((tmp_path / "run" / "summary.json").read_text())


@pytest.mark.parametrize("stop", ["ctrl-c", "time budget"])
def test_a_stop_in_a_learning_turn_that_replay_never_ends_is_seen_at_the_next_call(
    tmp_path, monkeypatch, stop
):
    """--replay-ratio 1e9: replay never holds the learner back, so only the stop check between
    calls ends its turn (ROUND_LEARNER_S set out of reach); the stop comes with its first report."""
    after_stop = []
    real_on_learner = Trainer.on_learner

    def on_learner(trainer, metrics):
        real_on_learner(trainer, metrics)
        if trainer.should_stop():
            after_stop.append(metrics["learner/updates_in_call"])
        elif metrics["learner/updates_in_call"] and stop == "ctrl-c":
            trainer.stop_request = "interrupted"  # what the first Ctrl-C sets
        elif metrics["learner/updates_in_call"]:
            trainer.log.start -= trainer.cfg.max_seconds  # the clock passes --max-seconds

    monkeypatch.setattr(Trainer, "on_learner", on_learner)
    monkeypatch.setattr(waits, "ROUND_LEARNER_S", 3600.0)
    rc, summary = run(tmp_path, "--replay-ratio", "1e9", "--max-seconds", "300")
    assert rc == 0 and after_stop == [], (rc, after_stop)
    assert summary["stop_reason"] == ("interrupted" if stop == "ctrl-c" else "time budget spent")
    assert summary["learner_steps"] == LEARNER_CALL_STEPS


def test_without_a_limit_actors_and_learner_take_turns_until_a_budget(tmp_path):
    """--replay-ratio 0 (no limit): 4 rounds of 256 env steps; learning starts in the second (a
    batch of 64 sequences of stride 5 stored), one call of 50 updates a round."""
    rc, summary = run(
        tmp_path, "--replay-ratio", "0", "--max-env-steps", "1024", "--max-seconds", "300"
    )
    assert rc == 0 and summary["stop_reason"] == "env step budget spent", summary
    assert summary["env_steps"] == 1024 and summary["learner_steps"] == 3 * LEARNER_CALL_STEPS, (
        summary
    )
