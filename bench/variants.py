"""Seed sweep over named variants of the default config: each variant is a set of
launch.py flags, each (variant, seed) one `python launch.py` process, `--jobs` of them at
once. Prints a row per run as it finishes, then a table of medians (env steps to solve
over all runs, an unsolved run counting as infinitely many; learner steps and process wall
time of the solved runs) and writes JSON.

  python -m bench.variants --variants base= rr8="--replay-ratio 8" --seeds 0 1 2 --jobs 2 \
      --out docs/sweeps/rr.json -- --in-process

Flags after `--` go to every run. Env steps to solve do not depend on the host's speed
in-process (evaluations are every --eval-every-env-steps); wall times do, so compare
them only within one invocation and with --jobs 1.
"""

import json
import math
import shlex
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from bench.solve import launch_command, machine, read_run
from common.cli import script_parser


def parse_variant(text: str):
    name, _, flags = text.partition("=")
    return name, shlex.split(flags)


def run_pairs(pairs, flags: dict, extra, max_seconds: float, run_root: Path, jobs: int):
    """Each (variant, seed) of pairs as its own `python launch.py flags[variant] EXTRA` process,
    `jobs` at once; yields read_run's row for each as it finishes (in the order they finish)."""

    def one(name, seed):
        return read_run(
            name,
            seed,
            launch_command(name, seed, [*flags[name], *extra], max_seconds, run_root),
            run_root,
        )

    with ThreadPoolExecutor(jobs) as pool:
        for job in as_completed([pool.submit(one, name, seed) for name, seed in pairs]):
            yield job.result()


def median_steps_to_solve(rows) -> float:
    """Median env steps to solve over every row, an unsolved one counting as infinitely many (so
    failures move it up: [100, 300, unsolved] -> 300, [100, unsolved] -> inf); 0 for no rows."""
    every = sorted(r["env_steps"] for r in rows if r["solved"]) + [math.inf] * sum(
        not r["solved"] for r in rows
    )
    return statistics.median(every) if every else 0


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--variants", nargs="+", required=True, help='NAME="--flag value ..." (NAME= for none)'
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="run seeds (launch.py --seed)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="each run's time budget (launch.py --max-seconds)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write every run and the medians as JSON here"
    )
    parser.add_argument("extra", nargs="*", help="flags for every run (after --)")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variants)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [(name, seed) for seed in args.seeds for name in variants]
        for row in run_pairs(pairs, variants, args.extra, args.max_seconds, Path(tmp), args.jobs):
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(
        f"\n{'variant':<16}{'solved':>8}{'env steps':>11}{'min':>9}{'max':>9}{'learner':>9}{'wall s':>8}  flags"
    )
    summary = {}
    for name, flags in variants.items():
        mine = [r for r in rows if r["config"] == name]
        solved = [r for r in mine if r["solved"]]
        steps = [r["env_steps"] for r in solved] or [0]
        m = {
            "flags": flags,
            "runs": len(mine),
            "solved": len(solved),
            "median_env_steps": median_steps_to_solve(mine),
            "min_env_steps": min(steps),
            "max_env_steps": max(steps),
            "median_learner_steps": statistics.median([r["learner_steps"] for r in solved] or [0]),
            "median_wall_s": statistics.median([r["process_wall_s"] for r in solved] or [0]),
        }
        summary[name] = m
        print(
            f"{name:<16}{m['solved']:>4}/{m['runs']:<3}{m['median_env_steps']:>11,.0f}{m['min_env_steps']:>9,}"
            f"{m['max_env_steps']:>9,}{m['median_learner_steps']:>9,.0f}{m['median_wall_s']:>8.1f}  {' '.join(flags)}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": machine(),
                    "seeds": args.seeds,
                    "extra": args.extra,
                    "jobs": args.jobs,
                    "summary": summary,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
