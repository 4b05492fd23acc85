"""Time-to-solve on CartPole-v1 over seeds: runs `python launch.py` once per seed and
configuration, as a user would (wall time includes Python and Ray start-up), and
prints a table plus JSON.

  python bench/solve.py                       # default run, seeds 0-4
  python bench/solve.py --configs default seed --seeds 0 1 2 3 4 --out docs/solve.json

Solved = the run's greedy 100-episode evaluation (separate env seeds) reached 475.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "default": [],
    "seed": ["--preset", "seed"],
    "in-process": ["--in-process"],
}


def run_one(name: str, seed: int, extra, max_seconds: float, run_root: Path) -> dict:
    args = [sys.executable, "-W", "ignore", str(ROOT / "launch.py"), *CONFIGS[name], "--seed", str(seed),
            "--max-seconds", str(max_seconds), "--run-root", str(run_root), "--run-name", f"{name}-s{seed}", *extra]
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    summary_path = run_root / f"{name}-s{seed}" / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        return {"config": name, "seed": seed, "solved": False, "error": proc.stderr.strip().splitlines()[-1:]}
    s = json.loads(summary_path.read_text())
    at = s["solved_at"] or {}
    return {"config": name, "seed": seed, "solved": s["solved"], "process_wall_s": round(wall, 1),
            "solve_s": at.get("seconds"), "env_steps": at.get("env_steps", s["env_steps"]),
            "learner_steps": s["learner_steps"], "greedy_eval": s["greedy_eval_mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("extra", nargs="*", help="flags passed to launch.py (after --)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            for seed in args.seeds:
                row = run_one(name, seed, args.extra, args.max_seconds, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'config':<12}{'seed':>5}{'solved':>8}{'wall s':>9}{'solve s':>9}{'env steps':>11}{'learner':>9}")
    for r in rows:
        print(f"{r['config']:<12}{r['seed']:>5}{str(r['solved']):>8}{r.get('process_wall_s') or 0:>9.1f}"
              f"{r.get('solve_s') or 0:>9.1f}{r.get('env_steps') or 0:>11,}{r.get('learner_steps') or 0:>9,}")
    for name in args.configs:
        mine = [r for r in rows if r["config"] == name]
        solved = [r for r in mine if r["solved"]]
        if solved:
            print(f"{name}: {len(solved)}/{len(mine)} solved; median wall {statistics.median(r['process_wall_s'] for r in solved):.1f} s, "
                  f"median env steps {statistics.median(r['env_steps'] for r in solved):,.0f}")
        else:
            print(f"{name}: 0/{len(mine)} solved")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
