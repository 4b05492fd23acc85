"""bench/ablate.py: medians (unsolved seeds as infinitely many env steps), the table and its
markdown, the median eval curve, variant sets, --resume's checks and skipping (pure, on
hand-made rows); bad input (one line, exit 2, nothing written); and one real in-process run
whose row, curve (from its metrics.jsonl) and plot are checked."""

import json
import math

import pytest

from bench import ablate
from bench import variants as bench_variants
from common.config import ConfigError

ROWS = [  # variant a: two of three seeds solved; b: one of three; c: none run yet
    {
        "config": "a",
        "seed": 0,
        "solved": True,
        "env_steps": 100,
        "solve_s": 10.0,
        "final_greedy_eval": 500.0,
    },
    {
        "config": "a",
        "seed": 1,
        "solved": True,
        "env_steps": 300,
        "solve_s": 30.0,
        "final_greedy_eval": 480.0,
    },
    {
        "config": "a",
        "seed": 2,
        "solved": False,
        "env_steps": 900,
        "solve_s": None,
        "final_greedy_eval": 100.0,
    },
    {
        "config": "b",
        "seed": 0,
        "solved": True,
        "env_steps": 200,
        "solve_s": 12.5,
        "final_greedy_eval": 490.0,
    },
    {
        "config": "b",
        "seed": 1,
        "solved": False,
        "env_steps": 900,
        "solve_s": None,
        "final_greedy_eval": 50.0,
    },
    {"config": "b", "seed": 2, "solved": False, "error": ["boom"]},
]
VARIANTS = {"a": [], "b": ["--reg-weight", "0"], "c": ["--unroll-steps", "1"]}


def test_median_steps_to_solve_counts_unsolved_as_infinite():
    rows = ROWS[:3]
    # [100, 300, inf]; without the unsolved: 200
    assert bench_variants.median_steps_to_solve(rows) == 300
    assert bench_variants.median_steps_to_solve(ROWS[3:]) == math.inf  # [200, inf, inf]
    assert bench_variants.median_steps_to_solve(ROWS[:2] + ROWS[3:5]) == 250  # [100, 200, 300, inf]
    # [100, 300, inf, inf]
    assert bench_variants.median_steps_to_solve(ROWS[:2] + ROWS[4:]) == math.inf
    assert bench_variants.median_steps_to_solve(ROWS[:2]) == 200
    assert bench_variants.median_steps_to_solve([]) == 0


def test_summary_per_variant():
    s = ablate.summarize(ROWS, VARIANTS)
    assert list(s) == ["a", "b", "c"]
    assert s["a"] == {
        "flags": [],
        "runs": 3,
        "solved": 2,
        "median_env_steps": 300,
        "min_env_steps": 100,
        "max_env_steps": 300,
        "median_solve_s": 20.0,
        "final_eval": {"median": 480.0, "min": 100.0, "max": 500.0},
    }
    assert s["b"] == {
        "flags": ["--reg-weight", "0"],
        "runs": 3,
        "solved": 1,
        "median_env_steps": None,
        "min_env_steps": 200,
        "max_env_steps": 200,
        "median_solve_s": 12.5,
        # the failed run has no eval
        "final_eval": {"median": 270.0, "min": 50.0, "max": 490.0},
    }
    assert s["c"] == {
        "flags": ["--unroll-steps", "1"],
        "runs": 0,
        "solved": 0,
        "median_env_steps": None,
        "min_env_steps": None,
        "max_env_steps": None,
        "median_solve_s": None,
        "final_eval": {"median": None, "min": None, "max": None},
    }


def test_text_and_markdown_tables():
    s = ablate.summarize(ROWS, VARIANTS)
    assert ablate.text_table(s).splitlines() == [
        "variant  solved  env steps to solve (min-max)  s to solve  final greedy eval (min-max)  flags",
        "a        2/3     300 (100-300)                 20.0        480.0 (100.0-500.0)          ",
        "b        1/3     unsolved (200-200)            12.5        270.0 (50.0-490.0)           --reg-weight 0",
        "c        0/0     unsolved                      -           -                            --unroll-steps 1",
    ]
    assert ablate.markdown_table(s, "python -m bench.ablate --set x").splitlines() == [
        "<!-- python -m bench.ablate --set x -->",
        "| variant | solved | env steps to solve (min-max) | s to solve | final greedy eval (min-max) | flags |",
        "|---|---|---|---|---|---|",
        "| a | 2/3 | 300 (100-300) | 20.0 | 480.0 (100.0-500.0) |  |",
        "| b | 1/3 | unsolved (200-200) | 12.5 | 270.0 (50.0-490.0) | `--reg-weight 0` |",
        "| c | 0/0 | unsolved | - | - | `--unroll-steps 1` |",
    ]


def test_median_curve_holds_each_seeds_newest_eval_from_where_all_have_one():
    curves = [[[100, 10.0], [300, 30.0], [500, 50.0]], [[200, 20.0], [400, 40.0]], [[300, 5.0]], []]
    # from 300 (the last first evaluation): 300 -> {30, 20, 5}, 400 -> {30, 40, 5}, 500 -> {50, 40, 5}
    assert ablate.median_curve(curves) == [[300, 20.0], [400, 30.0], [500, 40.0]]
    assert ablate.median_curve([[], []]) == []


def test_row_gets_the_greedy_curve_and_the_last_greedy_eval_of_its_metrics(tmp_path):
    run = tmp_path / "base-s3"
    run.mkdir()
    lines = [
        {"env_steps": 256, "time_s": 1.0, "actor/episodes": 4.0},
        {"env_steps": 256, "time_s": 1.1, "eval/screen_return": 30.0},
        {
            "env_steps": 256,
            "time_s": 1.2,
            "eval/greedy_return": 12.5,
            "eval/greedy_return_min": 9.0,
        },
        {
            "env_steps": 768,
            "time_s": 2.0,
            "eval/greedy_return": 61.0,
            "eval/greedy_return_min": 20.0,
        },
        {
            "env_steps": 1024,
            "time_s": 2.5,
            "eval/greedy_return": 40.0,
            "eval/greedy_return_min": 20.0,
        },
        {
            "env_steps": 1024,
            "time_s": 2.6,
            "eval/sampled_return": 70.0,
            "eval/sampled_return_min": 20.0,
        },
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    row = {"config": "base", "seed": 3, "solved": False}
    assert ablate.with_curve(row, tmp_path) == {
        **row,
        "final_greedy_eval": 40.0,
        "curve": [[256, 12.5], [768, 61.0], [1024, 40.0]],
    }
    assert ablate.with_curve({**row, "seed": 4}, tmp_path) == {
        **row,
        "seed": 4,
        "final_greedy_eval": None,
        "curve": [],
    }


def test_sets_combine_and_share_base():
    v = ablate.select_variants(["paper", "ablations"], ["lr3=--learning-rate 3e-3"])
    assert list(v)[:2] == ["base", "retrace-model-q"] and v["base"] == []
    assert len(v) == 6 + 8 + 1  # base once
    assert v["paper-all"] == [
        "--retrace-q",
        "model",
        "--value-head-target",
        "value",
        "--pg-normalizer",
        "shared",
        "--policy-terms-every-state",
    ]
    assert v["no-prior-mix"] == ["--prior-behaviour-weight", "0", "--prior-uniform-weight", "0"]
    assert v["lr3"] == ["--learning-rate", "3e-3"]
    with pytest.raises(
        ConfigError, match=r"variant 'base' is given twice with different flags: '' and '--seed 1'"
    ):
        ablate.select_variants(["paper"], ["base=--seed 1"])
    with pytest.raises(
        ConfigError, match=r"--set 'papr' is not a variant set; allowed: paper, ablations"
    ):
        ablate.select_variants(["papr"], [])


SETTINGS = {"extra": ["--in-process"], "max_seconds": 60.0, "max_env_steps": 1000}


def write_old(path, variants, rows, **settings):
    path.write_text(json.dumps({"variants": variants, "rows": rows, **SETTINGS, **settings}))


def test_resume_keeps_finished_rows_and_drops_failed_ones(tmp_path):
    path = tmp_path / "old.json"
    write_old(path, {"a": [], "b": ["--reg-weight", "0"]}, ROWS)
    rows = ablate.resumed_rows(path, VARIANTS, [0, 1, 2, 3], SETTINGS)
    assert [(r["config"], r["seed"]) for r in rows] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
    ]


@pytest.mark.parametrize(
    "variants, seeds, settings, message",
    [
        ({"a": [], "z": []}, [0, 1, 2], {}, r"has variant 'z', which is not asked for now"),
        (
            {"a": ["--reg-weight", "1"]},
            [0, 1, 2],
            {},
            r"variant 'a' in .* ran with '--reg-weight 1', now ''",
        ),
        ({"a": []}, [0, 1], {}, r"has seeds \[2\] that --seeds \[0, 1\] leaves out"),
        ({"a": []}, [0, 1, 2], {"max_env_steps": 500}, r"ran with max_env_steps 500, now 1000"),
        ({"a": []}, [0, 1, 2], {"extra": []}, r"ran with extra \[\], now \['--in-process'\]"),
    ],
)
def test_resume_refuses_another_experiment(tmp_path, variants, seeds, settings, message):
    path = tmp_path / "old.json"
    write_old(path, variants, ROWS[:3], **settings)
    with pytest.raises(ConfigError, match=message):
        ablate.resumed_rows(path, VARIANTS, seeds, SETTINGS)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "nope"], "--set 'nope' is not a variant set; allowed: paper, ablations"),
        (
            ["--variants", "x=--no-such-flag 1"],
            "variant 'x': unrecognized argument: --no-such-flag",
        ),
        (["--variants", "x=", "--jobs", "0"], "--jobs must be >= 1"),
        (["--variants", "x=", "--seeds", "zero"], "argument --seeds: invalid int value: 'zero'"),
        ([], "no variants: give --set NAME"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "r.json"
    assert ablate.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate.py: error: ") and message in err[0]
    assert not out.exists()


# if a guard failed
CHEAP = ["--variants", "x=", "--seeds", "0", "--max-env-steps", "1", "--", "--in-process"]


def test_resume_needs_out(capsys):
    assert ablate.main(["--resume", *CHEAP]) == 2
    assert (
        capsys.readouterr().err
        == "ablate.py: error: --resume continues the --out file: give --out\n"
    )


def test_existing_out_needs_resume_and_is_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("hours of results\n")
    assert ablate.main(["--out", str(out), *CHEAP]) == 2
    assert "--out " + str(out) + " exists: add --resume" in capsys.readouterr().err
    assert out.read_text() == "hours of results\n"


def test_a_real_run_then_resume_skips_it(tmp_path, capsys):
    """One in-process CartPole run on a 1024-env-step budget (about 10 s alone): its row, its greedy
    curve as metrics.jsonl has it, the final evaluation launch.py reported, the plot; then
    --resume finds nothing to do."""
    out, runs = tmp_path / "r.json", tmp_path / "runs"
    argv = [
        "--variants",
        "base=",
        "--seeds",
        "0",
        "--max-env-steps",
        "1024",
        "--out",
        str(out),
        "--keep-runs",
        str(runs),
        "--",
        "--in-process",
        "--eval-episodes",
        "3",
        "--eval-every-env-steps",
        "512",
        "--eval-min-train-return",
        "0",
        "--sampled-eval-episodes",
        "1",
    ]
    assert ablate.main(argv) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    metrics = [
        json.loads(line) for line in (runs / "base-s0" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [
        [m["env_steps"], m["eval/greedy_return"]] for m in metrics if "eval/greedy_return" in m
    ]
    summary = json.loads((runs / "base-s0" / "summary.json").read_text())
    assert (row["config"], row["seed"], row["solved"], row["stop_reason"]) == (
        "base",
        0,
        False,
        "env step budget spent",
    )
    assert row["env_steps"] == 1024 and row["learner_steps"] == summary["learner_steps"]
    # the evaluation after the budget ran out
    assert row["curve"] == evals and evals[-1][0] == 1024
    assert row["final_greedy_eval"] == summary["greedy_eval_mean"] == evals[-1][1]
    assert result["summary"]["base"]["runs"] == 1 and result["variants"] == {"base": []}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert ablate.main(["--resume", *argv]) == 0
    assert "0 runs to do, 1 done already" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == result["rows"]


def test_solved_fraction_steps_at_each_solved_run():
    rows = [
        {"solved": True, "env_steps": 300},
        {"solved": False, "env_steps": 800},
        {"solved": True, "env_steps": 100},
        {"solved": True, "env_steps": 200},
    ]
    assert ablate.solved_fraction(rows) == [[100, 0.25], [200, 0.5], [300, 0.75]]
