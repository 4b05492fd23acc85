"""Configuration (common/config.py): validation errors, presets, the command line, and the
exit code / one-line error of `python launch.py` with a bad flag."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import envs as envs_lib
from common.config import (
    PRESETS,
    SECTIONS,
    Config,
    ConfigError,
    build_parser,
    choices,
    parse_config,
    validate,
    with_preset,
)

ROOT = Path(__file__).resolve().parent.parent


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert text and "\n" not in text, text
    return text


# -- validation ----------------------------------------------------------------------------


def test_defaults_and_every_preset_are_valid():
    validate(Config())
    for name, values in PRESETS.items():
        validate(Config(**{**values, "preset": name}))


@pytest.mark.parametrize(
    "argv, expected",
    [
        # negative / zero sizes
        (["--batch-size", "-3"], "--batch-size=-3 is invalid: must be a whole number >= 1"),
        (["--replay-capacity", "0"], "--replay-capacity=0 is invalid: must be a whole number >= 1"),
        (["--sequence-length", "-1"], "--sequence-length=-1 is invalid"),
        (["--width", "0"], "--width=0 is invalid: must be a whole number >= 1"),
        (
            ["--num-actors", "-2"],
            "--num-actors=-2 is invalid: must be a whole number >= 1, or 'auto'",
        ),
        (["--unroll-steps", "-1"], "--unroll-steps=-1 is invalid: must be >= 0"),
        (["--max-grad-norm", "-0.5"], "--max-grad-norm=-0.5 is invalid: must be >= 0"),
        (["--replay-ratio", "-1"], "--replay-ratio=-1.0 is invalid: must be >= 0"),
        (["--replay-ratio", "nan"], "--replay-ratio=nan is invalid: must be a number, not NaN"),
        (["--replay-ratio", "inf"], "--replay-ratio=inf is invalid: must be finite (0 = no limit)"),
        (
            ["--eval-every-env-steps", "0"],
            "--eval-every-env-steps=0 is invalid: must be a whole number >= 1",
        ),
        (
            ["--target-blend-every-steps", "-1"],
            "--target-blend-every-steps=-1 is invalid: must be >= 0",
        ),
        # the pacing flags that the replay ratio replaced are gone
        (
            ["--learner-steps-per-1k-env-steps", "40"],
            "unrecognized argument: --learner-steps-per-1k-env-steps",
        ),
        (
            ["--learner-steps-per-episode", "20"],
            "unrecognized argument: --learner-steps-per-episode",
        ),
        (["--eval-every-s", "5"], "unrecognized argument: --eval-every-s"),
        (
            ["--target-blend-every-episodes", "30"],
            "unrecognized argument: --target-blend-every-episodes",
        ),
        # cross-field sizes
        (
            ["--batch-size", "100", "--replay-capacity", "50"],
            "--batch-size=100 is invalid: must be <= --replay-capacity=50",
        ),
        (
            ["--min-replay", "60", "--replay-capacity", "50", "--batch-size", "8"],
            "--min-replay=60 is invalid: must be <= --replay-capacity=50",
        ),
        (
            ["--sequence-stride", "11", "--sequence-length", "10"],
            "--sequence-stride=11 is invalid: must be <= --sequence-length=10",
        ),
        (
            ["--num-replay-shards", "9", "--batch-size", "8"],
            "--num-replay-shards=9 is invalid: must be <= --batch-size=8",
        ),
        # proportions
        (["--replay-fraction", "2"], "--replay-fraction=2.0 is invalid: must lie in [0, 1]"),
        (["--replay-fraction", "-0.1"], "--replay-fraction=-0.1 is invalid: must lie in [0, 1]"),
        (["--target-ema", "1.5"], "--target-ema=1.5 is invalid: must lie in [0, 1]"),
        (["--retrace-lambda", "-1"], "--retrace-lambda=-1.0 is invalid: must lie in [0, 1]"),
        (["--discount", "0"], "--discount=0.0 is invalid: must lie in (0, 1]"),
        (
            ["--prior-behaviour-weight", "0.7", "--prior-uniform-weight", "0.5"],
            "prior_uniform_weight must be <= 1",
        ),
        (["--learning-rate", "0"], "--learning-rate=0.0 is invalid: must be > 0"),
        # NaN passes every `x < 0` test unless it is caught first
        (["--learning-rate", "nan"], "--learning-rate=nan is invalid"),
        (["--learning-rate", "inf"], "--learning-rate=inf is invalid"),
        (["--max-grad-norm", "nan"], "--max-grad-norm=nan is invalid: must be a number, not NaN"),
        (["--solve-return", "nan"], "--solve-return=nan is invalid"),
        # choices
        (["--optimizer", "sgd"], "--optimizer='sgd' is invalid: allowed: adam, adamw"),
        (["--device", "tpu"], "--device='tpu' is invalid: allowed: auto, cpu, cuda"),
        (["--torso", "resnet"], "--torso='resnet' is invalid: allowed: auto, mlp, atari, minatar"),
        (["--value-target", "td"], "--value-target='td' is invalid: allowed: retrace, mc"),
        (["--dynamics-grad", "both"], "--dynamics-grad='both' is invalid: allowed: hidden, params"),
        (
            ["--preset", "atari"],
            "--preset='atari' is invalid: allowed: cartpole, seed, lunarlander, minatar-breakout, "
            "minatar-space-invaders, minatar-asterix, atari-pong",
        ),
        # combinations and syntax
        (
            ["--value-target", "mc", "--retrace-q", "model"],
            "--retrace-q='model' is invalid: cannot be combined with --value-target='mc' (its "
            "targets are the discounted returns, which use no q); allowed: v",
        ),
        (
            ["--unroll-steps", "11"],
            "--unroll-steps=11 is invalid: must be <= --sequence-length=10 (an unroll step past "
            "a sequence's end has no target)",
        ),
        (
            ["--in-process", "--address", "auto"],
            "--address='auto' is invalid: cannot be combined with --in-process",
        ),
        (["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
        (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
        (["--replay-fraction", "half"], "argument --replay-fraction: invalid float value: 'half'"),
        (["--no-such-flag", "1"], "unrecognized argument: --no-such-flag"),
    ],
)
def test_bad_values_raise_one_line_config_errors(argv, expected):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(argv)
    assert expected in one_line(excinfo)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("batch_size", -3, "must be a whole number >= 1"),
        ("replay_fraction", 1.01, "must lie in [0, 1]"),
        ("optimizer", "sgd", "allowed: adam, adamw"),
        ("preset", "nope", "allowed: cartpole, seed"),
        ("replay_capacity", 10, "must be <= --replay-capacity=10"),  # batch 64 > capacity 10
    ],
)
def test_validate_names_the_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as excinfo:  # raised as the Config is built
        dataclasses.replace(Config(), **{field: value})
    text = one_line(excinfo)
    assert allowed in text
    named = "--batch-size" if field == "replay_capacity" else "--" + field.replace("_", "-")
    assert text.startswith(named + "="), text


def test_every_choice_value_is_accepted():
    for name, allowed in choices().items():
        for value in allowed:
            validate(dataclasses.replace(Config(), **{name: value}))


def test_boundary_values_are_accepted():
    validate(
        Config(
            replay_fraction=0.0,
            target_ema=1.0,
            discount=1.0,
            batch_size=5000,
            replay_capacity=5000,
            sequence_stride=10,
            sequence_length=10,
            max_seconds=float("inf"),
            solve_return=None,
        )
    )


def test_unknown_env_id_is_a_one_line_env_error_naming_the_flag():
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("NoSuchEnv-v0")
    assert one_line(excinfo).startswith("--env='NoSuchEnv-v0' cannot be made")
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("CartPole-v99")
    assert "--env='CartPole-v99'" in one_line(excinfo)


def test_env_with_continuous_actions_is_rejected():
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("Pendulum-v1")
    assert (
        "has continuous action space Box(shape=(1,), dtype=float32); allowed: Discrete"
        in one_line(excinfo)
    )


# -- presets and the command line ----------------------------------------------------------


def test_default_preset_is_the_config_defaults():
    cfg = parse_config(["--num-cpus", "3"])
    assert cfg == Config(num_cpus=3)


def test_a_preset_applies_and_explicit_flags_override_it():
    cfg = parse_config(["--preset", "seed", "--num-cpus", "1"])
    for key, value in PRESETS["seed"].items():
        assert getattr(cfg, key) == value, key
    assert (cfg.width, cfg.batch_size, cfg.optimizer, cfg.actors_use_online) == (
        128,
        6,
        "adamw",
        True,
    )
    cfg = parse_config(
        ["--preset", "seed", "--width", "32", "--no-actors-use-online", "--num-cpus", "1"]
    )
    assert cfg.width == 32 and cfg.actors_use_online is False and cfg.batch_size == 6
    # a preset never leaks into a later parse
    assert parse_config(["--num-cpus", "1"]).width == Config().width


def test_dynamics_grad_choice_maps_to_its_hidden_state_gradient_scale():
    # 'hidden': the state entering g has its gradient halved; 'params': it is not (the learner halves
    # g's parameter gradients instead, tests/test_learner.py)
    assert Config(dynamics_grad="hidden").loss_params().hidden_grad_scale == 0.5
    assert Config(dynamics_grad="params").loss_params().hidden_grad_scale == 1.0
    assert (
        parse_config(["--dynamics-grad", "params", "--num-cpus", "1"])
        .loss_params()
        .hidden_grad_scale
        == 1.0
    )
    assert parse_config(["--num-cpus", "1"]).loss_params().hidden_grad_scale == 0.5
    # one named value for both mechanisms: --dynamics-grad-scale
    assert (
        Config(dynamics_grad="hidden", dynamics_grad_scale=0.25).loss_params().hidden_grad_scale
        == 0.25
    )
    assert (
        Config(dynamics_grad="params", dynamics_grad_scale=0.25).loss_params().hidden_grad_scale
        == 1.0
    )


def test_loss_params_are_the_configs_fields_of_the_same_name():
    """LossParams has no defaults of its own: every field comes from Config (or is derived)."""
    cfg = Config(
        discount=0.97,
        retrace_q="model",
        value_head_target="value",
        pg_normalizer="shared",
        policy_terms_every_state=True,
        prior_behaviour_weight=0.1,
        starts_per_sequence=2,
        batch_size=8,
    )
    p = cfg.loss_params()
    for f in dataclasses.fields(p):
        if f.name == "max_starts":
            assert p.max_starts == 16
        elif f.name not in ("hidden_grad_scale", "adv_eps"):
            assert getattr(p, f.name) == getattr(cfg, f.name), f.name


def test_pacing_defaults_and_flags():
    cfg = Config()
    assert (cfg.replay_ratio, cfg.eval_every_env_steps, cfg.target_blend_every_steps) == (
        38.4,
        2048,
        0,
    )
    cfg = parse_config(
        [
            "--replay-ratio",
            "0",
            "--eval-every-env-steps",
            "500",
            "--target-blend-every-steps",
            "7",
            "--num-cpus",
            "1",
        ]
    )
    assert (cfg.replay_ratio, cfg.eval_every_env_steps, cfg.target_blend_every_steps) == (
        0.0,
        500,
        7,
    )


def test_seed_preset_pacing_is_the_blogs_per_episode_schedule():
    """One sequence per episode (length = stride = the 500-step time limit): 20 updates of 6
    sequences per episode are 120 sampled sequences per inserted one, and a blend every 30
    episodes is one every 30 * 20 = 600 learner steps."""
    seed = PRESETS["seed"]
    assert seed["sequence_length"] == seed["sequence_stride"] == 500 and seed["batch_size"] == 6
    assert seed["replay_ratio"] == 20 * seed["batch_size"] == 120
    assert seed["target_blend_every_steps"] == 30 * 20 == 600
    from driver.wiring import shard_rate_limit

    limit = shard_rate_limit(validate(Config(**{**seed, "num_cpus": 1})))
    # 6 episodes = 120 updates either way
    assert (limit.min_size, limit.error_buffer) == (6, 120 * 6)


@pytest.mark.parametrize("text, expected", [("auto", 0), ("AUTO", 0), ("0", 0), ("3", 3)])
def test_num_actors_accepts_auto(text, expected):
    assert parse_config(["--num-actors", text, "--num-cpus", "1"]).num_actors == expected


def test_auto_is_only_a_word_for_num_actors():
    with pytest.raises(ConfigError) as excinfo:
        parse_config(["--batch-size", "auto"])
    assert "invalid int value: 'auto'" in one_line(excinfo)


def test_flags_of_every_kind_parse():
    cfg = parse_config(
        [
            "--env",
            "Acrobot-v1",
            "--seed",
            "5",
            "--replay-fraction",
            "0.25",
            "--no-dashboard",
            "--in-process",
            "--solve-return",
            "300",
            "--learning-rate",
            "3e-4",
            "--num-cpus",
            "1",
        ]
    )
    assert (
        cfg.env,
        cfg.seed,
        cfg.replay_fraction,
        cfg.dashboard,
        cfg.in_process,
        cfg.solve_return,
        cfg.learning_rate,
    ) == ("Acrobot-v1", 5, 0.25, False, True, 300.0, 3e-4)
    assert parse_config(["--solve-return", "none", "--num-cpus", "1"]).solve_return is None
    assert parse_config(["--dashboard", "--num-cpus", "1"]).dashboard is True
    assert parse_config(["--address", "10.0.0.1:6379"]).address == "10.0.0.1:6379"


def test_num_cpus_zero_means_this_machine_unless_joining_a_cluster():
    assert parse_config([]).num_cpus == (os.cpu_count() or 1)
    assert parse_config(["--address", "auto"]).num_cpus == 0


def test_every_config_field_has_a_flag():
    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in flags, f.name
        if f.type is bool:
            assert "--no-" + f.name.replace("_", "-") in flags, f.name


def test_help_groups_every_flag_by_section_with_its_default_and_choices():
    """`python launch.py --help` lists each Config field under its section's title, with the
    field's help, its default as typed on the command line, and its choices as the metavar."""
    proc = subprocess.run(
        [sys.executable, "launch.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    packed = "".join(proc.stdout.split())  # argparse wraps lines, also at hyphens
    sections = list(SECTIONS)
    order = [packed.index("".join((title + ":" + SECTIONS[title]).split())) for title in sections]
    assert order == sorted(order)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        section = sections.index(f.metadata["section"])
        at = packed.index(flag + ("," if f.type is bool else ""), order[section])
        assert order[section] < at < (order[section + 1] if section + 1 < len(order) else 10**9), (
            flag
        )
        assert "".join(f.metadata["help"].split()) in packed, flag
    shown = " ".join(proc.stdout.split())
    assert "--optimizer {adam,adamw} optimiser (default: adam)" in shown
    assert "--learning-rate X optimiser step size" in shown and "(default: 0.003)" in shown
    assert "--replay-ratio X" in shown and "(default: 38.4)" in shown
    assert (
        "--dashboard, --no-dashboard start the Ray dashboard with a local Ray (default: on)"
        in shown
    )
    assert (
        "--resume TEXT run directory to continue" in shown and "checkpoint (default: none)" in shown
    )
    assert (
        "--max-env-steps N stop after this many env steps (all actors) (default: 2000000)" in shown
    )
    assert len(proc.stdout.splitlines()) < 240


def test_flag_prefixes_are_refused_and_unknown_flags_get_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"^unrecognized argument: --lr \(did you mean --learning-rate\?\)$"
    ):
        parse_config(["--lr", "1"])
    with pytest.raises(
        ConfigError, match=r"^unrecognized argument: --batch \(did you mean --batch-size\?\)$"
    ):
        parse_config(["--batch", "8"])
    with pytest.raises(
        ConfigError,
        match=r"^unrecognized argument: --lerning-rate \(did you mean --learning-rate\?\)$",
    ):
        parse_config(["--lerning-rate=0.1"])
    with pytest.raises(ConfigError, match=r"^unrecognized argument: --zzz$"):
        parse_config(["--zzz"])
    # a flag's words inside a longer flag's beat a close spelling (--torso is 0.77 alike)
    with pytest.raises(
        ConfigError, match=r"^unrecognized argument: --actors \(did you mean --num-actors\?\)$"
    ):
        parse_config(["--actors", "2"])


def test_a_preset_s_env_bound_fields_stay_with_its_env():
    """--preset atari-pong --env CartPole-v1 must not stop at Pong's +18 or use its conv torso."""
    cfg = parse_config(["--preset", "atari-pong", "--env", "CartPole-v1", "--num-cpus", "1"])
    assert (cfg.solve_return, cfg.eval_min_train_return, cfg.torso) == (None, 0.0, "auto")
    assert cfg.batch_size == PRESETS["atari-pong"]["batch_size"]  # the rest of the preset holds
    same = parse_config(["--preset", "atari-pong", "--env", "ALE/Pong-v5", "--num-cpus", "1"])
    assert (same.solve_return, same.eval_min_train_return, same.torso) == (18.0, 15.0, "atari")
    given = parse_config(
        [
            "--preset",
            "atari-pong",
            "--env",
            "CartPole-v1",
            "--solve-return",
            "100",
            "--num-cpus",
            "1",
        ]
    )
    assert given.solve_return == 100.0


# -- launch.py exits cleanly on a bad value ------------------------------------------------


def test_launch_exits_2_with_one_line_on_bad_values(tmp_path):
    cases = {
        "batch": (
            ["--batch-size", "-3"],
            "launch.py: error: --batch-size=-3 is invalid: must be a whole number >= 1",
        ),
        "env": (["--env", "NoSuchEnv-v0"], "launch.py: error: --env='NoSuchEnv-v0' cannot be made"),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "launch.py", *argv, "--run-root", str(tmp_path / name)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, _) in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        assert "Traceback" not in err and "Traceback" not in out, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(cases[name][1]), err
        assert out == ""
        assert not (tmp_path / name).exists()  # nothing was started or written


def test_policy_terms_cover_every_state_except_in_the_seed_preset():
    """The default follows docs/ablations.md (the paper's form); the seed preset reproduces the blog,
    whose policy terms use its 5 start states only."""
    assert parse_config(["--num-cpus", "1"]).loss_params().policy_terms_every_state is True
    assert (
        parse_config(["--preset", "seed", "--num-cpus", "1"]).loss_params().policy_terms_every_state
        is False
    )


def test_a_config_built_in_code_is_validated_as_flags_are():
    """bench scripts, tests and notebooks build Config(...) directly: the same check applies."""
    with pytest.raises(
        ConfigError, match=r"^--batch-size=0 is invalid: must be a whole number >= 1$"
    ):
        Config(batch_size=0)
    with pytest.raises(ConfigError, match=r"^--optimizer='sgd' is invalid: allowed: adam, adamw$"):
        with_preset("lunarlander", optimizer="sgd")
