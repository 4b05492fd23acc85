"""Envs that raise (common/vector_env.py, actors/actor.py, launch.py): an error in an env's
step or reset costs that env's episode, is counted and logged, and never lets a sequence
span it; an env that cannot start gives up with one line. The envs are in
tests/flaky_envs.py, loaded with gymnasium's module:EnvId form.

CountingEnv's schedule makes the figures exact: with episodes of 8 steps and the 20th step
of each instance's life raising, an instance plays episodes 0 and 1 in full (steps 1-16),
steps 17-19 of episode 2, and raises at step 20; the next instance starts from scratch.
With T = stride = 4 an episode is exactly two sequences, so each instance leaves exactly 4
sequences, and the 3 steps of episode 2 (fewer than T) are still in the cutter when the
error comes: they are the dropped part.
"""

import json

import gymnasium as gym
import numpy as np
import pytest

import launch
from common import envs as envs_lib
from common import vector_env
from common.config import parse_config
from common.vector_env import EnvFailure, VectorEnv, rebuild_seed
from driver import on_ray
from tests import flaky_envs
from tests.test_actor import build, sequences, small_config

FLAKY = "tests.flaky_envs:FlakyCartPole-v0"
COUNTING = "tests.flaky_envs:CountingEnv-v0"
RESET_FAILS = "tests.flaky_envs:ResetFails-v0"
EPISODE, FAIL_AT = 8, 20


def counting_env(**kwargs) -> str:
    """A CountingEnv id registered with these kwargs (module:EnvId form)."""
    name = (
        "CountingEnv"
        + "".join(f"-{k}{v}" for k, v in sorted(kwargs.items())).replace("_", "")
        + "-v0"
    )
    if name not in gym.registry:
        gym.register(name, entry_point=flaky_envs.CountingEnv, kwargs=kwargs)
    return f"tests.flaky_envs:{name}"


def assert_one_line(message: str, *parts: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for part in parts:
        assert part in message, (part, message)


# -- the vector env ---------------------------------------------------------------------------


def test_without_errors_it_steps_exactly_as_gymnasiums_same_step_sync_vector_env():
    ours = VectorEnv("CartPole-v1", 3)
    ref = gym.vector.SyncVectorEnv(
        [lambda: envs_lib.make_env("CartPole-v1")] * 3,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    np.testing.assert_array_equal(ours.reset(seed=11), ref.reset(seed=11)[0])
    actions = np.random.default_rng(0).integers(0, 2, size=(300, 3))
    ends = 0
    for a in actions:
        got = ours.step(a)
        obs, reward, terminated, truncated, info = ref.step(a)
        np.testing.assert_array_equal(got.obs, obs)
        np.testing.assert_array_equal(got.reward, reward)
        np.testing.assert_array_equal(got.terminated, terminated)
        np.testing.assert_array_equal(got.truncated, truncated)
        for j in np.flatnonzero(terminated | truncated):
            np.testing.assert_array_equal(got.final_obs[j], info["final_obs"][j])
        assert not got.lost.any()
        ends += int((terminated | truncated).sum())
    assert ends > 20 and ours.errors == 0


def test_a_step_error_rebuilds_that_env_reseeded_and_reports_it_lost(capsys):
    envs = VectorEnv(counting_env(episode_steps=EPISODE, fail_at_step=3), 2, owner="actor 5")
    first = envs.reset(seed=100)
    made = flaky_envs.made[flaky_envs.COUNTING_ID]
    envs.step(np.zeros(2, int))
    envs.step(np.zeros(2, int))
    out = envs.step(np.zeros(2, int))  # both envs' 3rd step raises
    assert out.lost.tolist() == [True, True] and envs.errors == 2
    assert (
        out.reward.tolist() == [0.0, 0.0] and not out.terminated.any() and not out.truncated.any()
    )
    assert flaky_envs.made[flaky_envs.COUNTING_ID] == made + 2  # each rebuilt once
    # the rebuilt envs are new instances at their first observation
    assert out.obs[:, 1:].tolist() == [[0, 0], [0, 0]] and set(out.obs[:, 0]).isdisjoint(
        first[:, 0]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # the first error only
    assert_one_line(
        lines[0],
        "actor 5: env 0 of " + COUNTING.split(":")[0],
        "raised at step",
        "RuntimeError: CountingEnv",
        "step 3 failed",
        "env error 1",
        "episode dropped",
    )
    assert rebuild_seed(100, 1, 1) not in (None, 100, 101)


def test_a_rebuilt_env_is_reset_with_the_derived_seed():
    """FlakyCartPole's failures are drawn from reset's seed: reusing the seed would replay the
    same failure at the same step forever."""
    if "FlakyCartPoleAlways-v0" not in gym.registry:
        gym.register(
            "FlakyCartPoleAlways-v0",
            entry_point=flaky_envs.FlakyCartPole,
            kwargs={"failure_prob": 1.0},
        )
    envs = VectorEnv("tests.flaky_envs:FlakyCartPoleAlways-v0", 2)
    envs.reset(seed=40)
    envs.envs[1].unwrapped.failure_prob = 0.0
    out = envs.step(np.zeros(2, int))
    assert out.lost.tolist() == [True, False]
    expected, _ = envs_lib.make_env("CartPole-v1").reset(seed=rebuild_seed(40, 0, 1))
    np.testing.assert_array_equal(out.obs[0], expected)


def test_a_failed_autoreset_keeps_the_finished_episode_and_rebuilds_the_env():
    envs = VectorEnv(counting_env(episode_steps=2, fail_at_reset=2), 1)
    envs.reset(seed=0)
    envs.step(np.zeros(1, int))
    out = envs.step(np.zeros(1, int))  # the episode ends; its autoreset (reset 2) raises
    assert out.terminated.tolist() == [True] and out.reward.tolist() == [1.0] and not out.lost.any()
    assert out.final_obs[0, 1:].tolist() == [0, 2]  # episode 0, t = 2: kept
    # a new instance
    assert out.obs[0, 1:].tolist() == [0, 0] and out.obs[0, 0] != out.final_obs[0, 0]
    assert envs.errors == 1 and envs.failures_in_a_row.tolist() == [1]
    envs.step(np.zeros(1, int))
    # a good step clears the streak
    assert envs.failures_in_a_row.tolist() == [0]


def test_an_env_that_never_resets_gives_up_after_the_limit_with_one_line():
    made = flaky_envs.made[flaky_envs.RESET_FAILS_ID]
    envs = VectorEnv(RESET_FAILS, 3, owner="actor 2")
    with pytest.raises(EnvFailure) as excinfo:
        envs.reset(seed=0)
    assert flaky_envs.made[flaky_envs.RESET_FAILS_ID] - made == vector_env.MAX_FAILURES_IN_A_ROW
    assert envs.errors == vector_env.MAX_FAILURES_IN_A_ROW
    assert_one_line(
        str(excinfo.value),
        f"actor 2: --env={RESET_FAILS!r} failed 5 times in a row (env 0",
        "last, at reset: RuntimeError: " + flaky_envs.RESET_FAILURE,
    )


def test_errors_spread_over_steps_never_give_up():
    """Failing at the first step of every new instance is 'in a row'; failing after a good step is not."""
    envs = VectorEnv(counting_env(episode_steps=50, fail_at_step=2), 1)
    envs.reset(seed=0)
    for _ in range(3 * vector_env.MAX_FAILURES_IN_A_ROW):
        envs.step(np.zeros(1, int))
    # steps 2, 4, 6, ... of 15 raise
    assert envs.errors == 7 and envs.failures_in_a_row.tolist() == [0]
    with pytest.raises(EnvFailure, match="failed 5 times in a row"):
        first_step = VectorEnv(counting_env(episode_steps=50, fail_at_step=1), 1)
        first_step.reset(seed=0)
        for _ in range(vector_env.MAX_FAILURES_IN_A_ROW):
            first_step.step(np.zeros(1, int))


def test_the_first_and_every_hundredth_error_are_logged(capsys):
    envs = VectorEnv(counting_env(episode_steps=50, fail_at_step=2), 1, owner="actor 1")
    envs.reset(seed=0)
    for _ in range(500):  # every instance raises at its 2nd step: 250 errors
        envs.step(np.zeros(1, int))
    lines = capsys.readouterr().out.strip().splitlines()
    assert envs.errors == 250
    assert [line.split("; env error ")[1].split(":")[0] for line in lines] == ["1", "100", "200"]


def test_evaluation_counts_only_episodes_that_ended_without_an_error():
    """Episodes of 8 steps, reward 1 each; every instance raises at its 12th step, in its second
    episode: that episode (3 steps, return 3 so far) must not be counted or carried over into
    the rebuilt env's first one, which is each env's second counted episode."""
    from actors.evaluation import evaluate
    from common.networks import build_network

    env_id = counting_env(episode_steps=EPISODE, fail_at_step=12)
    net = build_network(small_config(env=env_id).network_spec(envs_lib.describe(env_id))).eval()
    returns = evaluate(net, env_id, episodes=100, seed=0)  # 50 envs, 2 episodes each
    assert returns.tolist() == [8.0] * 100


def test_an_evaluation_whose_episodes_never_end_without_an_error_raises_env_failure():
    """Every episode's 4th observation has the wrong shape: no episode can be counted, and the
    evaluation played on forever (the run hung in its first evaluation). 3 envs cut 3 episodes a
    step; past 10 per episode asked for (30) it stops, at 33."""
    from actors.evaluation import evaluate
    from common.networks import build_network

    env_id = counting_env(episode_steps=EPISODE, wrong_shape_at=4)
    net = build_network(small_config(env=env_id).network_spec(envs_lib.describe(env_id))).eval()
    with pytest.raises(EnvFailure) as failed:
        evaluate(net, env_id, episodes=3, seed=0)
    assert str(failed.value) == (
        f"evaluation: --env={env_id!r} raised in 33 episodes while only 0 of 3 ended without an "
        "error; an evaluation needs episodes that end"
    )


# -- the actor ---------------------------------------------------------------------------------


def test_actor_drops_the_cut_episode_and_no_sequence_spans_an_error():
    env_id = counting_env(episode_steps=EPISODE, fail_at_step=FAIL_AT)
    cfg = small_config(env=env_id, envs_per_actor=2, sequence_length=4, sequence_stride=4)
    actor, shard, spec, _, _ = build(cfg)
    lifetimes = 3
    # 3 lifetimes of good steps: 2 errors per env
    stats = actor.collect(2 * (FAIL_AT - 1) * lifetimes)
    assert stats["env_errors"] == 2 * (lifetimes - 1) == actor.envs.errors
    assert stats["env_steps"] == 2 * (FAIL_AT - 1) * lifetimes == 114
    assert stats["episodes"] == 2 * 2 * lifetimes and stats["lengths"] == [EPISODE] * 12
    # the third instances raise, then one good step
    more = actor.collect(2)
    assert (more["env_errors"], more["env_steps"], more["episodes"], more["sequences"]) == (
        2,
        2,
        0,
        0,
    )
    seqs = sequences(shard, spec)
    assert stats["sequences"] == len(seqs) == 2 * 4 * lifetimes == 24
    per_instance = {}
    for seq in seqs:
        assert seq["mask"].all()
        instance, episode, t = seq["obs"][:, 0], seq["obs"][:, 1], seq["obs"][:, 2]
        assert (instance == instance[0]).all() and (episode == episode[0]).all(), seq["obs"]
        assert np.diff(t).tolist() == [1, 1, 1, 1], seq["obs"]
        assert seq["terminal"].tolist() == [False, False, False, t[4] == EPISODE]
        assert not seq["truncated"].any()
        per_instance.setdefault(int(instance[0]), []).append((int(episode[0]), int(t[0])))
    assert len(per_instance) == 2 * lifetimes
    # episode 2 (steps 17-19, cut by the error) is nowhere
    for starts in per_instance.values():
        assert sorted(starts) == [(0, 0), (0, 4), (1, 0), (1, 4)]
    assert shard.stats().get("rejected", 0) == 0


def test_actor_counts_env_errors_between_calls():
    cfg = small_config(
        env=counting_env(episode_steps=EPISODE, fail_at_step=FAIL_AT),
        envs_per_actor=2,
        sequence_length=4,
        sequence_stride=4,
    )
    actor, _, _, _, _ = build(cfg)
    counted = []  # the Ray counter's increments
    record = actor.metrics._record
    actor.metrics._record = lambda kind, name, value, tags: (
        counted.append(value) if name == "env_errors" else None,
        record(kind, name, value, tags),
    )
    # up to the step before the error
    first = actor.collect(2 * (FAIL_AT - 1))
    second = actor.collect(2 * 5)  # the error, then 5 good steps
    assert (first["env_errors"], second["env_errors"]) == (0, 2) and counted == [0, 2]
    assert (first["env_steps"], second["env_steps"], actor.env_steps) == (38, 10, 48)


def test_actor_with_an_env_that_cannot_start_raises_env_failure_in_collect_not_in_init():
    actor, _, _, _, _ = build(small_config(env=RESET_FAILS))
    with pytest.raises(
        EnvFailure, match="actor 0: --env='tests.flaky_envs:ResetFails-v0' failed 5 times"
    ):
        actor.collect(10)


def test_same_seed_same_failures():
    cfg = small_config(env=FLAKY, envs_per_actor=2, sequence_length=5, sequence_stride=2)
    runs = []
    for _ in range(2):
        actor, shard, _, _, _ = build(cfg, index=1)
        stats = actor.collect(2 * 400)
        runs.append((shard.payloads, stats["env_errors"]))
    assert runs[0] == runs[1] and runs[0][1] > 0


# -- module:EnvId ------------------------------------------------------------------------------


def test_module_env_ids_load_and_bad_modules_are_one_line_env_errors():
    assert envs_lib.describe(FLAKY) == envs_lib.EnvInfo((4,), "float32", 2, 475.0)
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("tests.no_such_module:FlakyCartPole-v0")
    assert_one_line(
        str(excinfo.value),
        "--env='tests.no_such_module:FlakyCartPole-v0': module "
        "'tests.no_such_module' cannot be imported (ModuleNotFoundError",
        "allowed: module:EnvId",
    )
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("tests.flaky_envs:NotRegistered-v0")
    assert_one_line(str(excinfo.value), "--env='tests.flaky_envs:NotRegistered-v0' cannot be made")
    assert envs_lib.local_module_path(FLAKY) == on_ray.PROJECT_ROOT / "tests"
    assert envs_lib.local_module_path("gymnasium.envs.classic_control.cartpole:CartPole-v1") is None
    assert envs_lib.local_module_path("CartPole-v1") is None
    cfg = parse_config(["--env", FLAKY, "--address", "10.0.0.1:6379"])
    assert on_ray.cluster_runtime_env(cfg)["py_modules"] == [str(on_ray.PROJECT_ROOT / "tests")]


# -- launch.py ---------------------------------------------------------------------------------


def test_launch_with_an_env_that_cannot_reset_exits_2_with_one_line_before_anything_starts(
    tmp_path, capsys
):
    assert launch.main(["--env", RESET_FAILS, "--in-process", "--run-root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert_one_line(
        captured.err.strip(),
        "launch.py: error: start-up check: --env=",
        "failed 5 times in a row",
        flaky_envs.RESET_FAILURE,
    )
    assert list(tmp_path.iterdir()) == []


def test_in_process_run_goes_on_through_env_errors_and_sums_them(tmp_path):
    """Exact: each of the 2 envs of the one actor runs N vector steps, and raises at every
    FAIL_AT-th, so errors = 2 * (N // FAIL_AT) with N = (env steps + errors) / 2."""
    env_id = counting_env(episode_steps=EPISODE, fail_at_step=FAIL_AT)
    rc = launch.main(
        [
            "--env",
            env_id,
            "--in-process",
            "--num-actors",
            "1",
            "--envs-per-actor",
            "2",
            "--actor-chunk-steps",
            "64",
            "--max-env-steps",
            "1000",
            "--solve-return",
            "1e9",
            "--eval-episodes",
            "2",
            "--sampled-eval-episodes",
            "2",
            "--eval-every-env-steps",
            "100000",
            "--run-root",
            str(tmp_path),
            "--run-name",
            "run",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    errors, steps = summary["faults"]["env_errors"], summary["env_steps"]
    n = (steps + errors) // 2
    # 16 chunks of 64 good steps
    assert errors == 2 * (n // FAIL_AT) and (errors, steps) == (52, 1024)
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r["faults/env_errors"] for r in records if "faults/env_errors" in r]
    assert logged[-1] == errors and logged == sorted(logged)


def test_on_a_ray_cluster_the_env_module_ships_errors_are_summed_and_a_give_up_is_one_line(
    tmp_path, capsys, monkeypatch
):
    """A one-node cluster joined with --address, so the code travels as on a real cluster:
    working_dir without tests/ and the env module by py_modules (the actors import
    tests.flaky_envs from there, not from the driver's path). FlakyCartPole raises at 1% of
    steps; then an env that resets only in the driver passes the start-up check and makes
    the actor give up: exit 1, one line, no traceback."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # before the nodes start
    monkeypatch.setenv(flaky_envs.DRIVER_PID_VAR, str(__import__("os").getpid()))
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    base = [
        "--address",
        cluster.address,
        "--num-actors",
        "1",
        "--num-replay-shards",
        "1",
        "--no-dashboard",
        "--solve-return",
        "1e9",
        "--eval-episodes",
        "3",
        "--sampled-eval-episodes",
        "3",
        "--eval-every-env-steps",
        "1000000",
        "--run-root",
        str(tmp_path),
    ]
    try:
        assert (
            launch.main(
                base
                + [
                    "--env",
                    FLAKY,
                    "--max-env-steps",
                    "3000",
                    "--max-seconds",
                    "300",
                    # actors never held
                    "--replay-ratio",
                    "0",
                    "--run-name",
                    "flaky",
                ]
            )
            == 0
        )
        ray.shutdown()
        capsys.readouterr()
        rc = launch.main(
            base
            + [
                "--env",
                f"tests.flaky_envs:{flaky_envs.OFF_DRIVER_ID}",
                "--max-seconds",
                "60",
                "--run-name",
                "gives-up",
            ]
        )
        err = capsys.readouterr().err
    finally:
        ray.shutdown()
        cluster.shutdown()
    summary = json.loads((tmp_path / "flaky" / "summary.json").read_text())
    errors, steps = summary["faults"]["env_errors"], summary["env_steps"]
    records = [
        json.loads(line) for line in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["faults/env_errors"] for r in records if "faults/env_errors" in r][-1] == errors
    # 1% of steps raise: errors / (steps + errors) is within 4 binomial sigmas of 0.01
    trials = steps + errors
    assert steps >= 3000 and abs(errors - 0.01 * trials) < 4 * (0.01 * 0.99 * trials) ** 0.5, (
        errors,
        steps,
    )
    assert rc == 1 and "Traceback" not in err, err  # stderr also holds Ray's INFO lines
    assert_one_line(
        err.strip().splitlines()[-1],
        "launch.py: error: actor 0: --env='tests.flaky_envs:ResetFailsOffDriver-v0' failed 5 "
        "times in a row",
        flaky_envs.RESET_FAILURE,
    )
    # why it stopped, for later
    failed = json.loads((tmp_path / "gives-up" / "summary.json").read_text())
    assert failed["stop_reason"] == "error" and "failed 5 times in a row" in failed["error"], failed
