"""Bad data from an env (actors/actor.py, driver/bad_data.py, common/vector_env.py): NaN or inf
in observations, rewards or probabilities costs the one sequence that holds it, counted per
kind in summary.json's faults and shown in the progress line; a run whose data is mostly bad
stops with one line; an observation of the wrong shape is one env error.

CountingEnv's schedule makes the figures exact: episodes of 8 steps with T = stride = 4 are
exactly two sequences, steps 0-3 (observations 0-4) and 4-7 (observations 4-8); the
observation reached at t = 6 lies in the second only, as do its probabilities (the policy's
output for it) and the reward of step 5, which reaches it.
"""

import json

import numpy as np
import pytest

import launch
from common.sequence import nonfinite_kinds
from driver import bad_data
from tests import flaky_envs
from tests.test_actor import build, sequences, small_config
from tests.test_env_errors import counting_env

EPISODE = 8
EPISODES = 6  # per collect below: 3 per env


def collect_counting(**kwargs):
    """One collect of 3 episodes of each of 2 envs: (stats, sequences stored, shard)."""
    cfg = small_config(
        env=counting_env(episode_steps=EPISODE, **kwargs),
        envs_per_actor=2,
        sequence_length=4,
        sequence_stride=4,
    )
    actor, shard, spec, _, _ = build(cfg)
    stats = actor.collect(EPISODES * EPISODE)
    return stats, sequences(shard, spec), shard


@pytest.mark.parametrize(
    "kwargs, kinds",
    [
        (dict(nan_obs_at=6), {"obs": EPISODES, "probabilities": EPISODES}),
        (dict(nan_reward_at=6), {"reward": EPISODES}),
    ],
)
def test_a_nan_costs_the_one_sequence_that_holds_it(kwargs, kinds):
    stats, stored, shard = collect_counting(**kwargs)
    assert (stats["dropped_sequences"], stats["nonfinite"]) == (EPISODES, kinds)
    assert stats["sequences"] == len(stored) == EPISODES  # the first sequence of every episode
    for seq in stored:
        assert nonfinite_kinds(seq) == [] and seq["obs"][:, 2].tolist() == [0, 1, 2, 3, 4]
    assert shard.stats().get("rejected", 0) == 0  # replay never saw the bad ones


def test_a_wrong_shaped_observation_is_one_env_error_not_a_dead_actor():
    """Step 6 of every episode returns an observation of shape (2,) where the space says (3,):
    the env is rebuilt and its episode dropped, as for an exception. Both envs keep in step:
    5 good steps and a lost one, four times, then 4 good steps make the 48; each life of an
    env leaves its first sequence (steps 0-3)."""
    stats, stored, _ = collect_counting(wrong_shape_at=6)
    assert (stats["env_errors"], stats["env_steps"], len(stored)) == (8, 48, 10)
    assert stats["dropped_sequences"] == 0
    for seq in stored:
        assert seq["obs"].shape == (5, 3) and seq["obs"][:, 2].tolist() == [0, 1, 2, 3, 4]


def test_the_watch_stops_once_most_recent_data_is_bad():
    faults = __import__("collections").Counter()
    watch = bad_data.BadDataWatch(faults)
    assert watch.add(99, 0, {}) is False and watch.progress_note() == ""
    assert watch.add(60, 1, {"obs": 1}) is True and watch.progress_note() == ""  # under 1%
    assert watch.add(0, 1, {"reward": 1}) is True  # 2 of 161: 1.2%
    assert watch.progress_note() == " | bad data 1.2% dropped (obs 1, reward 1, probabilities 0)"
    for _ in range(bad_data.WINDOW_REPORTS - 1):
        watch.add(2, 3, {"obs": 3})  # the window: 57 of 95 bad, under the minimum of 100
    with pytest.raises(bad_data.BadData) as stopped:
        watch.add(2, 3, {"obs": 3})  # 60 of 100
    assert str(stopped.value).startswith(
        "60% of the last 100 sequences held NaN or inf (sequences dropped per kind: obs 61, "
        "reward 1, probabilities 0)"
    )
    assert (faults["dropped_sequences"], faults["nonfinite_obs"]) == (62, 61)


RUN = [
    "--in-process",
    "--envs-per-actor",
    "2",
    "--actor-chunk-steps",
    "64",
    "--sequence-length",
    "4",
    "--sequence-stride",
    "4",
    "--unroll-steps",
    "3",
    "--solve-return",
    "1e9",
    "--eval-episodes",
    "2",
    "--sampled-eval-episodes",
    "2",
    "--eval-every-env-steps",
    "100000",
    "--run-name",
    "run",
]


def test_nan_in_half_the_sequences_is_counted_in_the_summary_and_shown(tmp_path, capsys):
    """1,024 env steps = 128 episodes = 256 sequences, of which 128 hold the NaN: exact
    counts in summary.json and metrics.jsonl, the share in the progress line, exit 0."""
    env_id = counting_env(episode_steps=EPISODE, nan_obs_at=6)
    flags = [*RUN, "--env", env_id, "--max-env-steps", "1024", "--run-root", str(tmp_path)]
    assert launch.main(flags) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    faults = summary["faults"]
    assert (faults["dropped_sequences"], faults["nonfinite_obs"]) == (128, 128)
    assert (faults["nonfinite_probabilities"], faults["nonfinite_reward"]) == (128, 0)
    assert faults["replay_payloads_rejected"] == 0 and summary["learner_steps"] > 0
    assert out.splitlines()[-2].endswith(
        " | bad data 50.0% dropped (obs 128, reward 0, probabilities 128)"
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["faults/nonfinite_obs"] for r in records if "faults/nonfinite_obs" in r][-1] == 128


def test_an_env_beyond_float32s_range_stops_with_one_line_and_a_summary(tmp_path, capsys):
    """float64 observations of 1e39 become inf in float32: every sequence is bad. The run
    stops within a few chunks (it played on for its whole budget, 0 learner steps, exit 0)."""
    env_id = f"tests.flaky_envs:{flaky_envs.HUGE_OBS_ID}"
    flags = [*RUN, "--env", env_id, "--max-env-steps", "100000", "--run-root", str(tmp_path)]
    assert launch.main(flags) == 1
    err = capsys.readouterr().err
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "bad data" and summary["learner_steps"] == 0
    # at least 16 sequences a chunk of 64 steps (2 envs, T = 4): stopped by the 7th chunk
    assert summary["env_steps"] <= 7 * 64
    dropped = summary["faults"]["dropped_sequences"]
    assert err.splitlines() == [
        f"launch.py: error: 100% of the last {dropped} sequences held NaN or inf (sequences "
        f"dropped per kind: obs {dropped}, reward 0, probabilities {dropped}); the env gives "
        "non-finite values (a float64 beyond float32's range becomes inf), nothing to learn "
        f"from (summary.json in {run_dir})"
    ]
    assert np.isfinite(summary["env_steps"]) and summary["error"] in err


def test_a_stalled_env_is_counted_and_logged_once(tmp_path, capsys, monkeypatch):
    """Step 20 of every env instance's life sleeps 0.3 s, with stalls counted from 0.2 s (10 s
    in a run): the first printed as one line, all in summary.json's faults. 1,024 env steps of
    2 envs are 512 steps of each env's one instance: 2 stalls."""
    from common import vector_env

    monkeypatch.setattr(vector_env, "STALL_S", 0.2)
    env_id = counting_env(episode_steps=EPISODE, stall_at=20, stall_s=0.3)
    flags = [*RUN, "--env", env_id, "--max-env-steps", "1024", "--run-root", str(tmp_path)]
    assert launch.main(flags) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["faults"]["env_stalls"] == 2 and summary["faults"]["env_errors"] == 0
    stalls = [line for line in out.splitlines() if "(stalled: " in line]
    assert len(stalls) == 1 and stalls[0].startswith(
        f"actor 0: env 0 of {env_id} took 0.3 s for one step"
    )
    assert stalls[0].endswith("(stalled: >= 0.2 s); env stall 1 (logged: the 1st and every 100th)")
