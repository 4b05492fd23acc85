"""The figures of one finished launch.py run, from its run directory (bench/pong_gpu.sh uses it).

  python -m bench.run_report RUN_DIR [--out report.json]

Reads summary.json and metrics.jsonl and prints, and writes as JSON:
- env frames/s: agent steps x the env's frame skip (4 for Atari, 1 otherwise) per second of the run;
- learner updates/s: learner steps per second, over the run and from the first update on;
- the greedy evaluations (screens and full ones) with their env steps and wall time;
- the summary's stop reason, solve, final greedy and sampled means.
"""

import json
import sys
from pathlib import Path

from common import envs as envs_lib
from common.cli import script_parser


def report(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    skip = envs_lib.ATARI_FRAME_SKIP if envs_lib.is_atari(summary["env"]) else 1
    seconds = max(summary["seconds"], 1e-9)
    learner = [(r["time_s"], r["learner/steps"]) for r in rows if "learner/steps" in r]
    first_update_s = learner[0][0] if learner else None
    kinds = {"eval/screen_return": "screen", "eval/greedy_return": "full"}
    evals = [
        {"kind": name, "env_steps": r["env_steps"], "time_s": r["time_s"], "mean_return": r[key]}
        for r in rows
        for key, name in kinds.items()
        if key in r
    ]
    updates_after_first = (
        summary["learner_steps"] / max(seconds - first_update_s, 1e-9)
        if first_update_s is not None
        else 0.0
    )
    return {
        "run_dir": str(run_dir),
        "env": summary["env"],
        "stop_reason": summary["stop_reason"],
        "solved": summary["solved"],
        "seconds": summary["seconds"],
        "env_steps": summary["env_steps"],
        "env_frames_per_s": summary["env_steps"] * skip / seconds,
        "agent_steps_per_s": summary["env_steps"] / seconds,
        "learner_steps": summary["learner_steps"],
        "learner_updates_per_s": summary["learner_steps"] / seconds,
        "first_update_s": first_update_s,
        "learner_updates_per_s_after_first": updates_after_first,
        "greedy_evaluations": evals,
        "greedy_eval_mean": summary["greedy_eval_mean"],
        "sampled_eval_mean": summary["sampled_eval_mean"],
        "num_actors": summary["num_actors"],
    }


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if (
        not (args.run_dir / "summary.json").is_file()
        or not (args.run_dir / "metrics.jsonl").is_file()
    ):
        print(
            f"run_report: {args.run_dir} is invalid: it needs summary.json and metrics.jsonl; "
            "allowed: a run directory of a finished launch.py run",
            file=sys.stderr,
        )
        return 2
    r = report(args.run_dir)
    if args.out:
        args.out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        f"{r['env']}: {r['stop_reason']} after {r['seconds']:.0f} s, {r['num_actors']} actors; "
        f"{r['env_steps']:,} agent steps = {r['env_frames_per_s']:,.0f} env frames/s; "
        f"{r['learner_steps']:,} learner updates = {r['learner_updates_per_s']:.1f}/s "
        f"({r['learner_updates_per_s_after_first']:.1f}/s after the first at {r['first_update_s'] or 0:.0f} s)"
    )
    for e in r["greedy_evaluations"]:
        print(
            f"  greedy {e['kind']:<6} at {e['env_steps']:>10,} agent steps ({e['time_s']:6.0f} s): {e['mean_return']:+.1f}"
        )
    print(
        f"  final greedy mean {r['greedy_eval_mean']:+.1f}, sampled mean {r['sampled_eval_mean']:+.1f}, "
        f"solved: {r['solved']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
