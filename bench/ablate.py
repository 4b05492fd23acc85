"""Ablations: named sets of launch.py variants over seeds, each (variant, seed) one
`python launch.py` process as in bench/variants.py (`--jobs` at once); a table per variant,
its markdown for docs/ablations.md, JSON after every finished run, and a plot of greedy
evaluation against env steps (--out x.json also writes x.png).

  python -m bench.ablate --set paper --seeds 0 1 2 3 4 --out docs/ablations/cartpole-paper.json
  python -m bench.ablate --set ablations --seeds 0 1 2 --max-env-steps 300000 --max-seconds 1800 \\
      --out docs/ablations/lunar.json --resume -- --in-process --preset lunarlander
  python -m bench.ablate --variants base= lr3="--learning-rate 3e-3" --seeds 0 1 --markdown

Flags after `--` go to every run. --max-env-steps gives every run the same env-step budget
(a run that does not solve within it is judged by its final greedy evaluation). --resume
continues an --out file: (variant, seed) pairs already in it are skipped (a run that failed
is run again); its variants, budgets and shared flags must be the ones asked for now.

Per variant: seeds solved; env steps to solve, median over every seed with an unsolved seed
counting as infinitely many (min-max over the solved seeds); seconds to solve (the run's
own clock, start-up excluded), median over the solved seeds; the final greedy evaluation
(the last one in the run's metrics.jsonl: the one that solved, or the one after the budget
ran out), median and min-max over seeds. Wall times depend on --jobs and on what else runs.
"""

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.solve import PEERS, machine, run_dir
from bench.variants import median_steps_to_solve, parse_variant, run_pairs
from common.cli import OneLineParser, UsageError, exit_usage, first_paragraph
from common.config import ConfigError, parse_config
from learner.checkpoint import write_atomic

SETS = {
    "paper": {  # the paper's forms: each alone, then all together
        "base": [],
        "retrace-model-q": ["--retrace-q", "model"],
        "value-consistent": ["--value-head-target", "value"],
        "one-normaliser": ["--pg-normalizer", "shared"],
        "start-states-only": ["--no-policy-terms-every-state"],  # the default before the ablations
        "paper-all": [
            "--retrace-q",
            "model",
            "--value-head-target",
            "value",
            "--pg-normalizer",
            "shared",
            "--policy-terms-every-state",
        ],
    },
    "ablations": {  # the parts of Muesli the paper ablates
        "base": [],
        "no-model": ["--model-weight", "0"],
        "no-reg": ["--reg-weight", "0"],
        "sampled-kl": ["--reg-samples", "2"],
        "mc": ["--value-target", "mc"],
        "k1": ["--unroll-steps", "1"],
        "k3": ["--unroll-steps", "3"],
        "no-dyn-scale": ["--dynamics-grad-scale", "1.0"],
        "no-prior-mix": ["--prior-behaviour-weight", "0", "--prior-uniform-weight", "0"],
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ablate.py", description=first_paragraph(__doc__))
    parser.add_argument(
        "--set", nargs="+", default=[], dest="sets", help=f"variant sets: {', '.join(SETS)}"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[],
        help='more variants: NAME="--flag value ..." (NAME= for none)',
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="run seeds (launch.py --seed)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="each run's time budget")
    parser.add_argument(
        "--max-env-steps",
        type=int,
        default=None,
        help="each run's env-step budget (default: launch.py's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON, rewritten after every run; the plot next to it (.png)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --out: skip the (variant, seed) pairs it holds",
    )
    parser.add_argument(
        "--keep-runs", type=Path, default=None, help="keep the run directories below this folder"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("extra", nargs="*", help="launch.py flags for every run (after --)")
    return parser


def select_variants(sets, adhoc) -> dict:
    """name -> launch.py flags: the named sets' variants, then the ad-hoc NAME="FLAGS" ones. A name
    given twice must mean the same flags (each set has its own `base`)."""
    chosen = {}
    for name in sets:
        if name not in SETS:
            raise ConfigError(f"--set {name!r} is not a variant set; allowed: {', '.join(SETS)}")
    for name, flags in [v for s in sets for v in SETS[s].items()] + [
        parse_variant(v) for v in adhoc
    ]:
        if not name or name in PEERS:
            raise ConfigError(
                f"variant name {name!r} is invalid; allowed: a non-empty name other than {', '.join(PEERS)}"
            )
        if chosen.setdefault(name, flags) != flags:
            raise ConfigError(
                f"variant {name!r} is given twice with different flags: {shlex.join(chosen[name])!r} "
                f"and {shlex.join(flags)!r}"
            )
    if not chosen:
        raise ConfigError(
            "no variants: give --set NAME (allowed: "
            + ", ".join(SETS)
            + ") or --variants NAME=FLAGS"
        )
    return chosen


def run_flags(args) -> list:
    """What every run gets after its variant's flags: the flags after `--` and the env-step budget."""
    budget = [] if args.max_env_steps is None else ["--max-env-steps", str(args.max_env_steps)]
    return [*args.extra, *budget]


def previous_rows(out, resume: bool, variants: dict, seeds, settings: dict) -> list:
    """The rows a run of a bench script starts from: none, or with --resume those of --out
    (resumed_rows). An --out that exists must be continued (--resume) or left alone."""
    if resume and not out:
        raise ConfigError("--resume continues the --out file: give --out")
    if out and out.exists():
        if not resume:
            raise ConfigError(
                f"--out {out} exists: add --resume to continue it, or choose another file"
            )
        return resumed_rows(out, variants, seeds, settings)
    return []


def resumed_rows(path: Path, variants: dict, seeds, settings: dict) -> list:
    """The finished rows of an earlier --out file (a run that failed is dropped, to run again).
    The file must be of the same experiment: each of its variants asked for now with the same
    flags, its seeds among those asked for, the same budgets and shared flags."""
    try:
        old = json.loads(path.read_text())
        old_variants, old_rows = old["variants"], old["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--resume: {path} cannot be read as a result of this script "
            f"({type(exc).__name__}: {exc})"
        ) from None
    for name, flags in old_variants.items():
        if name not in variants:
            raise ConfigError(
                f"--resume: {path} has variant {name!r}, which is not asked for now; allowed: "
                f"the same variants or more ({', '.join(variants)})"
            )
        if flags != variants[name]:
            raise ConfigError(
                f"--resume: variant {name!r} in {path} ran with {shlex.join(flags)!r}, "
                f"now {shlex.join(variants[name])!r}"
            )
    for key, value in settings.items():
        if old.get(key) != value:
            raise ConfigError(f"--resume: {path} ran with {key} {old.get(key)!r}, now {value!r}")
    extra_seeds = sorted({r["seed"] for r in old_rows} - set(seeds))
    if extra_seeds:
        raise ConfigError(
            f"--resume: {path} has seeds {extra_seeds} that --seeds {list(seeds)} leaves out"
        )
    return [r for r in old_rows if "error" not in r]


def greedy_curve(metrics_path: Path, x: str = "env_steps") -> list:
    """[[x, greedy eval mean], ...] from a run's metrics.jsonl, in the order logged; x is
    env_steps (those the evaluated weights had seen) or time_s (the run's clock as the
    evaluation was logged)."""
    if not metrics_path.exists():
        return []
    lines = (json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip())
    return [[m[x], m["eval/greedy_return"]] for m in lines if "eval/greedy_return" in m]


def with_curve(row: dict, run_root: Path) -> dict:
    """read_run's row plus the run's greedy-eval curve and its final greedy evaluation."""
    curve = greedy_curve(run_dir(run_root, row["config"], row["seed"]) / "metrics.jsonl")
    return {**row, "final_greedy_eval": curve[-1][1] if curve else None, "curve": curve}


def spread(values) -> dict:
    """median, min and max of values (None for no values)."""
    values = list(values)
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rows, variants: dict) -> dict:
    """Per variant (in the order of variants): runs, solved, env steps to solve (median over every
    run, unsolved as infinity, written None when that median is infinite; min-max over the solved),
    seconds to solve (median over the solved), final greedy evaluation (median, min-max)."""
    out = {}
    for name, flags in variants.items():
        mine = [r for r in rows if r["config"] == name]
        solved = [r for r in mine if r["solved"]]
        median_steps = median_steps_to_solve(mine) if mine else None
        steps = spread(r["env_steps"] for r in solved)
        out[name] = {
            "flags": flags,
            "runs": len(mine),
            "solved": len(solved),
            "median_env_steps": None if median_steps == math.inf else median_steps,
            "min_env_steps": steps["min"],
            "max_env_steps": steps["max"],
            "median_solve_s": spread(r["solve_s"] for r in solved)["median"],
            "final_eval": spread(
                r["final_greedy_eval"] for r in mine if r.get("final_greedy_eval") is not None
            ),
        }
    return out


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table_cells(name: str, m: dict) -> list:
    """One variant's cells: variant, solved k/n, env steps median (min-max), s to solve, final eval median (min-max), flags."""
    if m["median_env_steps"] is None:
        steps = (
            "unsolved"
            if not m["solved"]
            else f"unsolved ({_num(m['min_env_steps'])}-{_num(m['max_env_steps'])})"
        )
    else:
        steps = (
            f"{_num(m['median_env_steps'])} ({_num(m['min_env_steps'])}-{_num(m['max_env_steps'])})"
        )
    e = m["final_eval"]
    final = (
        "-"
        if e["median"] is None
        else f"{_num(e['median'], 1)} ({_num(e['min'], 1)}-{_num(e['max'], 1)})"
    )
    return [
        name,
        f"{m['solved']}/{m['runs']}",
        steps,
        _num(m["median_solve_s"], 1),
        final,
        shlex.join(m["flags"]),
    ]


HEADER = [
    "variant",
    "solved",
    "env steps to solve (min-max)",
    "s to solve",
    "final greedy eval (min-max)",
    "flags",
]


def text_table(summary: dict) -> str:
    rows = [HEADER] + [table_cells(name, m) for name, m in summary.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def markdown_table(summary: dict, command: str) -> str:
    """The table as markdown, the command that made it as an HTML comment above it."""
    lines = [f"<!-- {command} -->", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, m in summary.items():
        cells = table_cells(name, m)
        cells[-1] = f"`{cells[-1]}`" if cells[-1] else ""
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_curve(curves) -> list:
    """[[env_steps, median over seeds], ...] of greedy-eval curves ([[env_steps, mean], ...] each):
    at every env-step count any curve has, each seed's newest evaluation at or before it (a run
    that has stopped keeps its last one); only where every seed has been evaluated."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    start = max(c[0][0] for c in curves)
    out = []
    for x in sorted({s for c in curves for s, _ in c if s >= start}):
        out.append([x, statistics.median([[v for s, v in c if s <= x][-1] for c in curves])])
    return out


def solved_fraction(rows) -> list:
    """[[env_steps, share of the runs solved by then], ...] at each solved run's env steps."""
    steps = sorted(r["env_steps"] for r in rows if r["solved"])
    return [[x, (i + 1) / len(rows)] for i, x in enumerate(steps)]


def plot(rows, variants: dict, path: Path, title: str) -> None:
    """Two panels per variant: the share of seeds solved by each env-step count, and the median
    over seeds of the greedy evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (solved_ax, eval_ax) = plt.subplots(1, 2, figsize=(12, 5))
    for i, name in enumerate(variants):
        mine = [r for r in rows if r["config"] == name]
        style, label = ("-", "--", ":")[i // 10 % 3], f"{name} ({len(mine)} seeds)"
        share = solved_fraction(mine)
        if share:
            steps, shares = zip(*([[0, 0.0]] + share))
            solved_ax.plot(steps, shares, style, drawstyle="steps-post", label=label)
        curve = median_curve([r.get("curve") for r in mine])
        if curve:
            steps, means = zip(*curve)
            eval_ax.plot(steps, means, style, drawstyle="steps-post", label=label)
    solved_ax.set_ylabel("share of seeds solved")
    eval_ax.set_ylabel("greedy eval (median over seeds)")
    for ax in (solved_ax, eval_ax):
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 160), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(result, indent=2) + "\n").encode())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "bench.ablate", *argv])
    try:
        args = build_parser().parse_args(argv)
        variants = select_variants(args.sets, args.variants)
        if (
            args.jobs < 1
            or args.max_seconds <= 0
            or (args.max_env_steps is not None and args.max_env_steps < 1)
        ):
            raise ConfigError("--jobs must be >= 1, --max-seconds > 0 and --max-env-steps >= 1")
        for name, flags in variants.items():  # a bad flag stops here, before any run
            try:
                parse_config([*flags, *run_flags(args)])
            except UsageError as exc:
                raise ConfigError(f"variant {name!r}: {exc}") from None
        settings = {
            "extra": args.extra,
            "max_seconds": args.max_seconds,
            "max_env_steps": args.max_env_steps,
        }
        rows = previous_rows(args.out, args.resume, variants, args.seeds, settings)
    except UsageError as exc:
        return exit_usage("ablate.py", exc)
    done = {(r["config"], r["seed"]) for r in rows}
    todo = [(name, seed) for seed in args.seeds for name in variants if (name, seed) not in done]
    print(f"{len(todo)} runs to do, {len(done)} done already", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "machine": machine(),
        "sets": args.sets,
        "variants": variants,
        "seeds": args.seeds,
        **settings,
        "jobs": args.jobs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        run_root = args.keep_runs or Path(tmp)
        for row in run_pairs(
            todo, variants, run_flags(args), args.max_seconds, run_root, args.jobs
        ):
            if row.get("stop_reason", "").startswith("interrupted"):
                print(
                    f"{row['config']} seed {row['seed']} was interrupted: not recorded", flush=True
                )
                continue
            row = with_curve(row, run_root)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
            rows = [r for r in rows if (r["config"], r["seed"]) != (row["config"], row["seed"])] + [
                row
            ]
            if args.out:
                write_result(
                    args.out, {**result, "summary": summarize(rows, variants), "rows": rows}
                )
    rows.sort(key=lambda r: (list(variants).index(r["config"]), r["seed"]))
    summary = summarize(rows, variants)
    print("\n" + text_table(summary))
    if args.markdown:
        print("\n" + markdown_table(summary, command))
    if args.out:
        write_result(args.out, {**result, "summary": summary, "rows": rows})
        plot(rows, variants, args.out.with_suffix(".png"), command)
        print(f"-> {args.out}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
