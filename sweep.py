"""Many training runs as Ray Tune trials: seeds and hyperparameter sweeps.

  python sweep.py --seeds 0 1 2                                    # the default config, three seeds
  python sweep.py --param learning_rate=grid:1e-3,3e-3 --seeds 0 1  # 2 x 2 = 4 trials
  python sweep.py --param replay_ratio=loguniform:10:100 --samples 6 --seeds 0
  python sweep.py --space space.yaml --seeds 0 1 2 -- --preset lunarlander

Each trial is one training run (driver/trainer.py's Trainer) of the config `launch.py FLAGS
--field value ...` would build, with its own run directory under <out>/runs/. A trial
runs its components inside the trial's resources: with --trial-cpus 1 in the trial's own
process (as --in-process), with more as Ray actors in the trial's placement group (the
learner, the actors and the shards of launch.py on Ray). Trials run in parallel where the
cluster has room (--max-concurrent caps it). Flags after `--` go to every trial.

A search-space entry is NAME=KIND:ARGS over any Config field (the YAML file maps NAME to
{KIND: ARGS} with the same kinds):
  grid:a,b,c         every value (trials multiply)       choice:a,b,c    one at random
  uniform:lo:hi      loguniform:lo:hi                    randint:lo:hi   (hi excluded)
--samples N draws the random entries N times (for each grid point); with --search optuna,
Optuna's TPE draws them from the results so far (--metric, --mode; no grid entries). A line is printed per
finished trial, then a table of every trial and one of medians per configuration (over
seeds; an unsolved trial counts as more env steps than any solved one); --sweep-dir also gets
results.json and Tune's own files.
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from common.cli import OneLineParser, UsageError, exit_usage
from common.config import Config, ConfigError, parse_config

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# a trial's results --search optuna can optimise
METRICS = ("greedy_eval", "sampled_eval", "env_steps", "seconds")
# the sweep sets these itself
RUN_FIELDS = ("run_root", "run_name", "resume", "address", "in_process")


def typed(text):
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, anything else stays a string."""
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def parse_entry(text: str) -> tuple:
    """'NAME=KIND:ARGS' -> (NAME, KIND, [values]); grid/choice split on ',', ranges on ':'."""
    name, eq, spec = text.partition("=")
    kind, colon, args = spec.partition(":")
    if not eq or not colon or kind not in KINDS:
        raise ConfigError(
            f"--param {text!r} is invalid: allowed: NAME=KIND:ARGS with KIND one of {', '.join(KINDS)}"
        )
    values = args.split(",") if kind in ("grid", "choice") else args.split(":")
    return name.replace("-", "_"), kind, [typed(v) for v in values]


def check_entry(name: str, kind: str, values: list) -> None:
    """One line naming what is wrong with a search-space entry."""
    if name not in FIELDS or name in RUN_FIELDS:
        raise ConfigError(
            f"search space: {name!r} is not a Config field a trial can vary "
            "(see python launch.py --help; run and placement fields are the sweep's)"
        )
    if kind in ("grid", "choice") and not values:
        raise ConfigError(f"search space: {name}={kind} needs at least one value")
    if kind in ("uniform", "loguniform", "randint"):
        if (
            len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            or not values[0] < values[1]
            or (kind == "loguniform" and values[0] <= 0)
        ):
            raise ConfigError(
                f"search space: {name}={kind}:{':'.join(map(str, values))} is invalid: "
                f"allowed: {kind}:LO:HI with numbers LO < HI"
                + (", LO > 0" if kind == "loguniform" else "")
            )


def read_space(entries, path=None, seeds=()) -> dict:
    """{name: (kind, values)} from --param entries, a YAML file and --seeds (a grid over seed)."""
    space = {}
    if path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"--space {str(path)!r} cannot be read: {exc}".splitlines()[0]
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"--space {str(path)!r}: expected a mapping NAME: {{KIND: [values]}}")
        for name, spec in data.items():
            if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
                raise ConfigError(
                    f"--space {str(path)!r}: {name}: expected {{KIND: [values]}} with KIND one of "
                    + ", ".join(KINDS)
                )
            ((kind, values),) = spec.items()
            space[name] = (
                kind,
                [typed(v) for v in (values if isinstance(values, list) else [values])],
            )
    for text in entries:
        name, kind, values = parse_entry(text)
        space[name] = (kind, values)
    if seeds:
        if "seed" in space:
            raise ConfigError("--seeds and a search-space entry for seed: give one of them")
        space["seed"] = ("grid", list(seeds))
    for name, (kind, values) in space.items():
        check_entry(name, kind, values)
    return space


def tune_space(space: dict) -> dict:
    """The Tune param_space for read_space's dict."""
    from ray import tune

    make = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    return {name: make[kind](values) for name, (kind, values) in space.items()}


def trial_argv(flags: list, params: dict) -> list:
    """launch.py's command line for one trial: the shared flags, then the trial's values."""
    argv = list(flags)
    for name, value in sorted(params.items()):
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def grid_points(space: dict) -> list:
    """Every grid point, each random entry at its first value or low end: the configs to validate
    before Ray starts (a random draw can still fail in its trial, which is reported)."""
    points = [{}]
    for name, (kind, values) in space.items():
        options = values if kind == "grid" else values[:1]
        points = [{**p, name: v} for p in points for v in options]
    return points


def run_trial(params: dict, flags: list, run_root: str, trial_cpus: float) -> dict:
    """Tune's function trainable: one training run, its summary reported as the trial's result."""
    from ray import tune

    from common import envs as envs_lib
    from driver.trainer import Trainer, make_run_dir, train
    from driver.wiring import placed

    name = tune.get_context().get_trial_name()
    placement = ["--in-process"] if trial_cpus <= 1 else []
    cfg, where = placed(
        parse_config(
            trial_argv(flags, params) + placement + ["--run-root", run_root, "--run-name", name]
        )
    )
    summary = train(Trainer(cfg, envs_lib.describe(cfg.env), make_run_dir(cfg), None, where))
    at = summary["solved_at"] or {}
    result = {
        "solved": summary["solved"],
        "stop_reason": summary["stop_reason"],
        "seconds": at.get("seconds", summary["seconds"]),
        "env_steps": at.get("env_steps", summary["env_steps"]),
        "learner_steps": summary["learner_steps"],
        "greedy_eval": summary["greedy_eval_mean"],
        "sampled_eval": summary["sampled_eval_mean"],
        "run_dir": summary["run_dir"],
    }
    tune.report(result)
    return result


def trial_name(trial) -> str:
    """Tune's trial directory, the trial's run directory and its row all carry this name."""
    return f"trial-{trial.trial_id}"


def trial_resources(trial_cpus: float):
    """The trial's placement group: one bundle for the trial's own process (the driver of its
    components), and with --trial-cpus > 1 a second one for its learner, actors and shards."""
    from ray import tune

    if trial_cpus <= 1:
        return tune.PlacementGroupFactory([{"CPU": trial_cpus}])
    return tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": trial_cpus - 1}], strategy="PACK")


def config_key(params: dict) -> str:
    """The trial's configuration without its seed: trials that differ only in seed share it."""
    return (
        " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(params.items())
            if k != "seed"
        )
        or "(base)"
    )


def medians(rows: list) -> dict:
    """Per configuration: solved count, median env steps to solve over all its trials (an unsolved
    or failed trial counts as infinitely many), median seconds and greedy eval of the solved ones."""
    out = {}
    for key in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == key]
        solved = [r for r in mine if r.get("solved")]
        steps = sorted(r["env_steps"] for r in solved) + [math.inf] * (len(mine) - len(solved))
        out[key] = {
            "trials": len(mine),
            "solved": len(solved),
            "failed": sum(1 for r in mine if r.get("error")),
            "median_env_steps": statistics.median(steps),
            "median_seconds": statistics.median([r["seconds"] for r in solved]) if solved else None,
            "median_greedy_eval": statistics.median(
                [r["greedy_eval"] for r in mine if "greedy_eval" in r]
            )
            if any("greedy_eval" in r for r in mine)
            else None,
        }
    return out


def format_row(r: dict) -> str:
    seed = "" if r.get("seed") is None else f" seed={r['seed']}"
    if r.get("error"):
        return f"{r['trial']:<20} FAILED    {r['config']}{seed}: {r['error']}"
    state = "solved" if r["solved"] else "unsolved"
    return (
        f"{r['trial']:<20} {state:<9} {r['env_steps']:>9,} env steps {r['seconds']:>7.1f} s  "
        f"greedy {r['greedy_eval']:>6.1f}  {r['config']}{seed}"
    )


def format_tables(rows: list, summary: dict) -> str:
    lines = ["", "trials:"] + ["  " + format_row(r) for r in rows]
    lines += [
        "",
        f"{'configuration':<40}{'solved':>9}{'failed':>7}{'env steps':>11}{'seconds':>9}{'greedy':>8}",
    ]
    for key, m in summary.items():
        steps = "inf" if math.isinf(m["median_env_steps"]) else f"{m['median_env_steps']:,.0f}"
        secs = "-" if m["median_seconds"] is None else f"{m['median_seconds']:.1f}"
        greedy = "-" if m["median_greedy_eval"] is None else f"{m['median_greedy_eval']:.1f}"
        lines.append(
            f"{key:<40}{m['solved']:>5}/{m['trials']:<3}{m['failed']:>7}{steps:>11}{secs:>9}{greedy:>8}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sweep.py",
        description="Seeds and sweeps as Ray Tune trials.",
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=KIND:ARGS",
        help="a search-space entry over a Config field (repeatable)",
    )
    parser.add_argument(
        "--space", type=Path, default=None, help="YAML file of search-space entries"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[], help="seeds (a grid over --seed)"
    )
    parser.add_argument(
        "--samples", type=int, default=1, help="draws of the random entries per grid point"
    )
    parser.add_argument(
        "--search",
        choices=("random", "optuna"),
        default="random",
        help="how random entries are drawn: independently, or by Optuna's TPE (pip install optuna)",
    )
    parser.add_argument(
        "--metric", choices=METRICS, default="greedy_eval", help="what --search optuna optimises"
    )
    parser.add_argument(
        "--mode", choices=("max", "min"), default="max", help="maximise or minimise --metric"
    )
    parser.add_argument(
        "--trial-cpus",
        type=float,
        default=1.0,
        help="CPUs per trial: 1 = its components in the trial's process, more = Ray actors",
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=0, help="trials at once (0 = as many as fit)"
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join (default: start a local Ray)"
    )
    parser.add_argument("--num-cpus", type=int, default=0, help="CPUs of a local Ray (0 = all)")
    parser.add_argument(
        "--verbose", action="store_true", help="show each trial's own progress lines"
    )
    parser.add_argument(
        "--sweep-dir",
        type=Path,
        default=None,
        help="folder of the sweep's runs, Tune state and results.json (default runs/sweep-<time>)",
    )
    parser.add_argument("flags", nargs="*", help="launch.py flags for every trial (after --)")
    return parser


def trial_lines():
    """A Tune callback printing one line per finished or failed trial."""
    from ray import tune

    class TrialLines(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            print(
                format_row(row(trial_name(trial), trial.config, trial.last_result, None)),
                flush=True,
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            print(
                format_row(
                    row(
                        trial_name(trial),
                        trial.config,
                        {},
                        "raised (its error is in the final table)",
                    )
                ),
                flush=True,
            )

    return TrialLines()


def row(trial: str, params: dict, metrics: dict, error) -> dict:
    """One trial's row: its name, configuration (without seed), seed, and results or error line."""
    out = {
        "trial": trial,
        "config": config_key(params),
        "seed": params.get("seed"),
        "params": params,
    }
    if error is not None:
        lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
        out["error"] = lines[-1][:300] if lines else type(error).__name__
    else:
        out.update(
            {
                k: metrics[k]
                for k in (
                    "solved",
                    "stop_reason",
                    "seconds",
                    "env_steps",
                    "learner_steps",
                    "greedy_eval",
                    "sampled_eval",
                    "run_dir",
                )
            }
        )
    return out


def collect_rows(grid) -> list:
    """One row per trial of Tune's ResultGrid (failed trials too), sorted by configuration and seed."""
    rows = [
        row(Path(r.path).name if r.path else "?", r.config or {}, r.metrics or {}, r.error)
        for r in grid
    ]
    return sorted(rows, key=lambda r: (r["config"], str(r["seed"])))


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        space = read_space(args.param, args.space, args.seeds)
        for name in RUN_FIELDS:
            if any(
                a == "--" + name.replace("_", "-")
                or a.startswith("--" + name.replace("_", "-") + "=")
                for a in args.flags
            ):
                raise ConfigError(
                    f"--{name.replace('_', '-')} is set by sweep.py for each trial; remove it"
                )
        if args.search == "optuna" and any(kind == "grid" for kind, _ in space.values()):
            raise ConfigError(
                "--search optuna draws every entry itself: use choice instead of grid (and no --seeds)"
            )
        if args.samples < 1 or args.trial_cpus <= 0 or args.max_concurrent < 0:
            raise ConfigError("--samples must be >= 1, --trial-cpus > 0 and --max-concurrent >= 0")
        # bad flags and grid values stop here, before Ray starts
        for params in grid_points(space):
            parse_config(trial_argv(args.flags, params) + ["--in-process"])
    except UsageError as exc:
        return exit_usage("sweep.py", exc)
    try:
        import pandas  # noqa: F401 (a ray[tune] dependency; Tune's import fails without it)
        from ray import tune

        searcher = None
        if args.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            searcher = OptunaSearch(metric=args.metric, mode=args.mode, seed=0)
    except (ImportError, AssertionError) as exc:  # OptunaSearch asserts optuna is importable
        want = (
            "pip install optuna"
            if args.search == "optuna"
            else "pip install -r requirements-tune.txt"
        )
        print(
            f"sweep.py: error: --search {args.search} needs packages that are not installed ({str(exc).splitlines()[0]}); "
            f"{want}",
            file=sys.stderr,
        )
        return 2
    out = (args.sweep_dir or Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    # with verbose=0: no status tables, our lines only
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import logging

    import ray

    # a failed trial's traceback: error.txt, its line here
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)

    from driver.on_ray import cluster_runtime_env

    if args.address:
        ray.init(
            address=args.address,
            runtime_env=cluster_runtime_env(Config()),
            log_to_driver=args.verbose,
        )
    else:
        ray.init(
            address="local",
            num_cpus=args.num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=args.verbose,
        )
    try:
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, flags=args.flags, run_root=str(out / "runs"), trial_cpus=args.trial_cpus
            ),
            trial_resources(args.trial_cpus),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(space),
            tune_config=tune.TuneConfig(
                num_samples=args.samples,
                search_alg=searcher,
                max_concurrent_trials=args.max_concurrent or None,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(out),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[trial_lines()],
            ),
        )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    rows = collect_rows(grid)
    summary = medians(rows)
    print(format_tables(rows, summary))
    (out / "results.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "flags": args.flags,
                "space": {k: [kind, v] for k, (kind, v) in space.items()},
                "samples": args.samples,
                "trial_cpus": args.trial_cpus,
                "summary": summary,
                "rows": rows,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"-> {out / 'results.json'}")
    failed = sum(1 for r in rows if r.get("error"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
