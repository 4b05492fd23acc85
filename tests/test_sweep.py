"""sweep.py: the search space read from flags and YAML, the trial command lines and medians
(pure), bad input (one line, exit 2, before Ray), and on local Ray a two-trial sweep with one
trial that raises, and a trial's components placed inside its placement group."""

import json
import math

import pytest

import sweep
from common.config import ConfigError


def test_entries_parse_to_kinds_and_typed_values():
    assert sweep.parse_entry("learning_rate=grid:1e-3,3e-3") == (
        "learning_rate",
        "grid",
        [0.001, 0.003],
    )
    assert sweep.parse_entry("batch-size=choice:32,64") == ("batch_size", "choice", [32, 64])
    assert sweep.parse_entry("replay_ratio=loguniform:10:100") == (
        "replay_ratio",
        "loguniform",
        [10, 100],
    )
    assert sweep.parse_entry("optimizer=grid:adam,adamw") == (
        "optimizer",
        "grid",
        ["adam", "adamw"],
    )
    assert sweep.parse_entry("actors_use_online=grid:true,false") == (
        "actors_use_online",
        "grid",
        [True, False],
    )
    with pytest.raises(
        ConfigError,
        match=r"--param 'lr=normal:0:1' is invalid: allowed: NAME=KIND:ARGS with KIND one of grid",
    ):
        sweep.parse_entry("lr=normal:0:1")
    with pytest.raises(ConfigError, match=r"--param 'seed' is invalid"):
        sweep.parse_entry("seed")


def test_space_from_yaml_flags_and_seeds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\nbatch_size: {grid: [32, 64]}\n")
    space = sweep.read_space(["width=choice:32,64", "batch_size=grid:16"], path, seeds=[0, 1])
    assert space == {
        "learning_rate": ("loguniform", [1e-4, 1e-2]),
        "batch_size": ("grid", [16]),
        "width": ("choice", [32, 64]),
        "seed": ("grid", [0, 1]),
    }
    assert sweep.grid_points(space) == [
        {"learning_rate": 1e-4, "batch_size": 16, "width": 32, "seed": 0},
        {"learning_rate": 1e-4, "batch_size": 16, "width": 32, "seed": 1},
    ]


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "no_such_field=grid:1",
            r"search space: 'no_such_field' is not a Config field a trial can vary",
        ),
        ("run_root=grid:/tmp", r"search space: 'run_root' is not a Config field a trial can vary"),
        (
            "learning_rate=uniform:1:1",
            r"learning_rate=uniform:1:1 is invalid: allowed: uniform:LO:HI with numbers LO < HI",
        ),
        ("learning_rate=loguniform:0:1", r"allowed: loguniform:LO:HI with numbers LO < HI, LO > 0"),
        ("width=randint:8", r"width=randint:8 is invalid"),
    ],
)
def test_bad_space_entries_name_the_entry(entry, message):
    with pytest.raises(ConfigError, match=message):
        sweep.read_space([entry])


def test_seeds_and_a_seed_entry_conflict():
    with pytest.raises(
        ConfigError, match=r"--seeds and a search-space entry for seed: give one of them"
    ):
        sweep.read_space(["seed=grid:1,2"], seeds=[0])


def test_trial_argv_appends_the_trial_values_after_the_shared_flags():
    argv = sweep.trial_argv(
        ["--preset", "seed"],
        {"seed": 2, "learning_rate": 0.0003, "actors_use_online": False, "optimizer": "adamw"},
    )
    assert argv == [
        "--preset",
        "seed",
        "--no-actors-use-online",
        "--learning-rate",
        "0.0003",
        "--optimizer",
        "adamw",
        "--seed",
        "2",
    ]


def test_medians_count_unsolved_and_failed_trials_as_unsolved():
    rows = [
        {"config": "a", "solved": True, "env_steps": 100, "seconds": 10.0, "greedy_eval": 500.0},
        {"config": "a", "solved": True, "env_steps": 300, "seconds": 30.0, "greedy_eval": 480.0},
        {"config": "a", "solved": False, "env_steps": 900, "seconds": 60.0, "greedy_eval": 100.0},
        {"config": "b", "error": "boom"},
    ]
    m = sweep.medians(rows)
    assert m["a"] == {
        "trials": 3,
        "solved": 2,
        "failed": 0,
        "median_env_steps": 300,
        "median_seconds": 20.0,
        "median_greedy_eval": 480.0,
    }
    assert (
        m["b"]["failed"] == 1
        and math.isinf(m["b"]["median_env_steps"])
        and m["b"]["median_seconds"] is None
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        # every grid point is validated
        (["--param", "width=grid:32,-4"], "--width=-4"),
        (["--param", "bogus=grid:1"], "'bogus' is not a Config field"),
        (
            ["--seeds", "0", "--", "--run-root", "/tmp"],
            "--run-root is set by sweep.py for each trial; remove it",
        ),
        (["--samples", "0"], "--samples must be >= 1"),
        (
            ["--space", "/nonexistent/space.yaml"],
            "--space '/nonexistent/space.yaml' cannot be read",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(
    tmp_path, capsys, argv, message
):
    out = tmp_path / "sweep"
    assert sweep.main(["--sweep-dir", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sweep.py: error: ") and message in err[0]
    assert not out.exists()


def test_two_trials_on_local_ray_and_a_trial_that_raises_is_reported(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = sweep.main(
        [
            "--param",
            "env=grid:CartPole-v1,NoSuchEnv-v0",
            "--num-cpus",
            "2",
            "--sweep-dir",
            str(out),
            "--",
            "--max-seconds",
            "3",
            "--eval-episodes",
            "2",
            "--sampled-eval-episodes",
            "1",
            "--eval-screen-episodes",
            "1",
        ]
    )
    assert code == 1  # a failed trial fails the sweep
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    rows = {r["params"]["env"]: r for r in results["rows"]}
    assert set(rows) == {"CartPole-v1", "NoSuchEnv-v0"}
    good, bad = rows["CartPole-v1"], rows["NoSuchEnv-v0"]
    assert (
        "error" not in good
        and good["solved"] is False
        and good["stop_reason"] == "time budget spent"
    )
    assert good["env_steps"] >= 256 and 8.0 <= good["greedy_eval"] <= 500.0
    summary = json.loads((out / "runs" / good["trial"] / "summary.json").read_text())
    assert summary["env"] == "CartPole-v1" and summary["env_steps"] == good["env_steps"]
    assert "--env='NoSuchEnv-v0' cannot be made" in bad["error"]
    assert results["summary"]["env=NoSuchEnv-v0"]["failed"] == 1
    assert results["summary"]["env=CartPole-v1"] == {
        **results["summary"]["env=CartPole-v1"],
        "trials": 1,
        "failed": 0,
    }
    # a line per finished trial, then the table with both
    assert f"{bad['trial']:<20} FAILED    env=NoSuchEnv-v0" in printed
    assert printed.count(good["trial"]) == 2 and printed.count(bad["trial"]) == 2


def test_a_trials_components_run_inside_its_placement_group(tmp_path):
    """With --trial-cpus > 1 the learner, actors, shards and store are Ray actors in the trial's group."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        group = placement_group([{"CPU": 1}, {"CPU": 1}])
        ray.get(group.ready())

        @ray.remote(num_cpus=1)
        def build_and_ask(run_root):
            from common.config import parse_config
            from common.envs import describe
            from driver.wiring import Components, placed

            cfg, where = placed(
                parse_config(["--run-root", run_root, "--run-name", "t", "--num-actors", "2"])
            )
            c = Components(cfg, describe(cfg.env), where).start()
            ask = lambda _self: ray.util.get_current_placement_group().id.hex()  # noqa: E731
            handles = [c.learner, c.store, *c.actors, *c.shards]
            # an actor placed outside the group would wait for a CPU the group holds: time out, not hang
            return (
                where.plan.num_actors,
                where.plan.learner["num_cpus"],
                ray.get([h.__ray_call__.remote(ask) for h in handles], timeout=120),
            )

        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        actors, learner_cpus, groups = ray.get(
            build_and_ask.options(scheduling_strategy=strategy).remote(str(tmp_path))
        )
        # the second bundle's 1 CPU: half to the learner
        assert (actors, learner_cpus) == (2, 0.5)
        assert groups == [group.id.hex()] * 5  # learner, store, 2 actors, 1 shard
        remove_placement_group(group)
    finally:
        ray.shutdown()


def test_optuna_draws_the_random_entries(tmp_path):
    """--search optuna: Tune's OptunaSearch (seed 0) picks the values; Tune's own random draws would differ."""
    out = tmp_path / "sweep"
    code = sweep.main(
        [
            "--search",
            "optuna",
            "--param",
            "learning_rate=loguniform:1e-3:1e-2",
            "--param",
            "batch_size=choice:32,64",
            "--samples",
            "2",
            "--num-cpus",
            "2",
            "--sweep-dir",
            str(out),
            "--",
            "--max-seconds",
            "2",
            "--eval-episodes",
            "1",
            "--sampled-eval-episodes",
            "1",
            "--eval-screen-episodes",
            "1",
        ]
    )
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    drawn = sorted((r["params"]["learning_rate"], r["params"]["batch_size"]) for r in rows)
    assert drawn == [(0.003506575410186656, 64), (0.003538453590906551, 32)]
    assert all(r["env_steps"] >= 256 for r in rows)


def test_optuna_refuses_grid_entries(tmp_path, capsys):
    assert (
        sweep.main(["--search", "optuna", "--seeds", "0", "1", "--sweep-dir", str(tmp_path / "s")])
        == 2
    )
    assert (
        "--search optuna draws every entry itself: use choice instead of grid"
        in capsys.readouterr().err
    )


def test_inside_schedules_every_component_by_the_group_strategy():
    from common.config import parse_config
    from driver import placement

    plan = placement.plan(parse_config(["--num-actors", "2"]), 3.0, 3.0, 0.0)
    moved = placement.inside(plan, "GROUP")
    for role in ("learner", "actor", "shard", "store"):
        assert getattr(moved, role) == {**getattr(plan, role), "scheduling_strategy": "GROUP"}
    assert moved.num_actors == plan.num_actors == 2
