"""Start-up and exit of whole `python launch.py` processes: launch -> first env step, solving
evaluation -> exit, and the wall time, as medians over --runs runs of each code folder and mode.

    python -m bench.startup [--runs 3] [--modes ray in-process] [--out FILE] [DIR ...] [-- LAUNCH ARGS]

Each DIR is a checkout of this project (default: this one), e.g. an older commit made with
`git worktree add /tmp/old COMMIT`; the runs alternate between the folders (and modes) round by
round, so a machine whose speed drifts affects each alike. Every run is a fresh process with the
same interpreter, in its DIR, writing to a temporary run root.

Times are taken from summary.json's "timeline" (seconds since the process started,
driver/timeline.py). A checkout from before the timeline has only logger-relative times
(timing.first_env_step_s, solved_at.seconds); the logger's start is then placed at summary.json's
modification time less `seconds` and timing.finish_s (about +-0.05 s, from `seconds`' rounding),
and "solved" is when the driver took the solving evaluation, up to a round (0.5 s) after it ended,
which favours such a checkout. The exit is when the process ended, seen from here.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.cli import script_parser

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("launch_to_first_env_step_s", "solved_to_exit_s", "summary_to_exit_s", "wall_s")


def figures(summary: dict, spawned: float, ended: float, summary_mtime: float) -> dict:
    """The figures of one run from its summary.json, when its process was spawned and ended (wall)."""
    timeline = summary.get("timeline")
    if timeline:
        start = timeline["start_unix"]
        first_env, solved, written = (
            timeline.get(k) for k in ("first_env_step", "solved", "summary")
        )
    else:  # before driver/timeline.py: logger-relative times (see the module docstring)
        start = summary_mtime - summary["seconds"] - summary["timing"]["finish_s"]
        first_env = summary["timing"]["first_env_step_s"]
        solved = (summary.get("solved_at") or {}).get("seconds")
        written = summary_mtime - start
    exit_s = ended - start
    return {
        "launch_to_first_env_step_s": None
        if first_env is None
        else round(start - spawned + first_env, 3),
        "solved_to_exit_s": None if solved is None else round(exit_s - solved, 3),
        "summary_to_exit_s": round(exit_s - written, 3),
        "wall_s": round(ended - spawned, 3),
        "solved": summary.get("solved"),
        "env_steps": summary.get("env_steps"),
        "timeline": timeline,
    }


def run_once(code: Path, mode: str, launch_args: list, run_root: Path, name: str) -> dict:
    """One `python launch.py` in `code`; its figures, or {"error": ...} if it failed."""
    cmd = [
        sys.executable,
        "launch.py",
        "--run-root",
        str(run_root),
        "--run-name",
        name,
        *launch_args,
    ]
    if mode == "in-process":
        cmd.append("--in-process")
    spawned = time.time()
    proc = subprocess.run(
        cmd, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ended = time.time()
    path = run_root / name / "summary.json"
    if proc.returncode != 0 or not path.exists():
        return {"error": f"exit {proc.returncode}: {proc.stdout[-500:]}"}
    return figures(json.loads(path.read_text()), spawned, ended, path.stat().st_mtime)


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    launch_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = script_parser(__doc__)
    parser.add_argument(
        "dirs",
        nargs="*",
        type=Path,
        default=[ROOT],
        help="checkouts to compare (default: this one)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each folder and mode")
    parser.add_argument(
        "--modes", nargs="+", default=["ray", "in-process"], choices=["ray", "in-process"]
    )
    parser.add_argument("--out", type=Path, help="write the runs and medians here (JSON)")
    parser.add_argument(
        "--pause",
        type=float,
        default=3.0,
        help="seconds between runs: a Ray run's processes end after its driver has exited",
    )
    args = parser.parse_args(argv)
    dirs = [d.resolve() for d in args.dirs]
    runs = []
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for r in range(args.runs):
            for code in dirs:
                for mode in args.modes:
                    if runs:
                        time.sleep(args.pause)
                    out = run_once(code, mode, launch_args, Path(tmp), f"{len(runs)}")
                    runs.append({"dir": str(code), "mode": mode, "run": r, **out})
                    shown = {k: out.get(k) for k in FIGURES} if "error" not in out else out
                    print(f"run {r} {mode:10s} {code}: {shown}", flush=True)
    rows = []
    for code in dirs:
        for mode in args.modes:
            mine = [
                x for x in runs if x["dir"] == str(code) and x["mode"] == mode and "error" not in x
            ]
            rows.append(
                {
                    "dir": str(code),
                    "mode": mode,
                    "runs": len(mine),
                    **{k: median([x[k] for x in mine]) for k in FIGURES},
                }
            )
    head = ["dir", "mode", "runs", *FIGURES]
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in head) + " |")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                    "launch_args": launch_args,
                    "host_cpus": os.cpu_count(),
                    "medians": rows,
                    "runs": runs,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all(row["runs"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
