"""Time-to-solve on CartPole-v1 over seeds: runs `python launch.py` once per seed and
configuration, as a user would (wall time includes Python and Ray start-up), and
prints a table plus JSON. The peers run the same way, in the same invocation, as
their own processes (bench/peers/; `pip install -r requirements-bench.txt`):

  sb3-ppo    Stable-Baselines3 PPO, rl-baselines3-zoo CartPole-v1 hyperparameters
  rllib-ppo  RLlib PPO of the installed Ray, Ray's tuned CartPole example settings

  python -m bench.solve                       # default run, seeds 0-4
  python -m bench.solve --configs default seed sb3-ppo rllib-ppo --seeds 0 1 2 3 4 --out docs/solve.json
  python -m bench.solve --configs default sb3-ppo --seeds 0 --json    # last line: the summary as JSON
  python -m bench.solve --configs in-process --seeds 0 1 2 3 4 --tune  # our seeds as Ray Tune trials, in parallel

With --tune our configurations' seeds run as Ray Tune trials through sweep.py (in parallel
where the machine has room; `in-process` as one-CPU trials, the others with --trial-cpus);
their rows then have the trial's time to solve but no whole-process wall time, so wall
ratios to the peers are left out (env-step ratios stay).

Solved = the run's greedy 100-episode evaluation (separate env seeds) reached 475: the
peers are judged by the project's own evaluation (bench/peers/harness.py). The ratios
at the end are ours / peer on the medians over solved seeds: below 1 means we are faster
or need fewer env steps.
"""

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.host import describe
from common.cli import script_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "default": [],
    "seed": ["--preset", "seed"],
    "in-process": ["--in-process"],
}
PEERS = {  # name -> (runner module, run from ROOT; a module it needs; what to install)
    "sb3-ppo": ("bench.peers.sb3_ppo", "stable_baselines3", "stable-baselines3"),
    "rllib-ppo": ("bench.peers.rllib_ppo", "tree", "RLlib's dependencies (dm_tree, ...)"),
}


def run_dir(run_root: Path, name: str, seed: int) -> Path:
    """Where launch_command's run of (name, seed) writes: run_root/name-sSEED."""
    return Path(run_root) / f"{name}-s{seed}"


def launch_command(name: str, seed: int, flags, max_seconds: float, run_root: Path) -> list:
    """`python launch.py FLAGS` (or a peer's runner with FLAGS) for one seed, writing to
    run_dir(run_root, name, seed)."""
    common = [
        "--seed",
        str(seed),
        "--max-seconds",
        str(max_seconds),
        "--run-root",
        str(run_root),
        "--run-name",
        run_dir(run_root, name, seed).name,
    ]
    if name in PEERS:
        return [sys.executable, "-W", "ignore", "-m", PEERS[name][0], *flags, *common]
    return [sys.executable, "-W", "ignore", str(ROOT / "launch.py"), *flags, *common]


def read_run(name: str, seed: int, argv: list, run_root: Path, env=None) -> dict:
    """Run argv as its own process; one row from the summary.json it wrote (wall time of the whole process)."""
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    summary_path = run_dir(run_root, name, seed) / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        return {
            "config": name,
            "seed": seed,
            "solved": False,
            "process_wall_s": round(wall, 1),
            "error": (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:],
        }
    s = json.loads(summary_path.read_text())
    at = s["solved_at"] or {}
    return {
        "config": name,
        "seed": seed,
        "solved": s["solved"],
        "stop_reason": s["stop_reason"],
        "process_wall_s": round(wall, 1),
        "solve_s": at.get("seconds"),
        "env_steps": at.get("env_steps", s["env_steps"]),
        "learner_steps": s["learner_steps"],
        "greedy_eval": s["greedy_eval_mean"],
    }


def run_one(
    name: str, seed: int, extra, max_seconds: float, run_root: Path, compile_cache: str = "user"
) -> dict:
    """One process; `compile_cache` is what our run finds of learner/compiled.py's cache: 'user'
    (the user's, as it is), 'fresh' (an empty one, as on a fresh machine; the background build
    it starts is stopped when the run ends) or 'off'."""
    if name in PEERS:
        return read_run(name, seed, launch_command(name, seed, [], max_seconds, run_root), run_root)
    argv = launch_command(name, seed, [*CONFIGS[name], *extra], max_seconds, run_root)
    if compile_cache == "user":
        return read_run(name, seed, argv, run_root)
    if compile_cache == "off":
        return read_run(name, seed, argv, run_root, dict(os.environ, MUESLI_RAY_CACHE="off"))
    with tempfile.TemporaryDirectory(prefix="muesli-ray-fresh-cache-") as cache:
        row = read_run(name, seed, argv, run_root, dict(os.environ, MUESLI_RAY_CACHE=cache))
        subprocess.run(["pkill", "-f", cache], check=False)  # its build would outlive the run
        return row


def run_seeds_as_trials(
    name: str, seeds, extra, max_seconds: float, run_root: Path, trial_cpus: float
) -> list:
    """Our config's seeds as Ray Tune trials (sweep.py); rows like read_run's, without process wall time."""
    import sweep

    out = run_root / f"{name}-tune"
    cpus = 1 if name == "in-process" else trial_cpus
    flags = [a for a in CONFIGS[name] if a != "--in-process"]
    sweep.main(
        [
            "--seeds",
            *map(str, seeds),
            "--trial-cpus",
            str(cpus),
            "--sweep-dir",
            str(out),
            "--",
            *flags,
            *extra,
            "--max-seconds",
            str(max_seconds),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    rows = []
    for r in results["rows"]:
        row = {
            "config": name,
            "seed": r["seed"],
            "solved": bool(r.get("solved")),
            "process_wall_s": None,
            "run_dir": r.get("run_dir"),
        }
        if "error" in r:
            row["error"] = [r["error"]]
        else:
            row.update(
                solve_s=r["seconds"],
                env_steps=r["env_steps"],
                learner_steps=r["learner_steps"],
                greedy_eval=r["greedy_eval"],
            )
        rows.append(row)
    return rows


def check_policy(run_dir: Path, seed: int, episodes: int = 100) -> dict:
    """The exported policy.pt2 on its own, as a user would load it (torch.export, no project
    network code): greedy returns of `episodes` CartPole-v1 episodes on env seeds that neither
    the run's actors nor its evaluations used."""
    import torch

    from actors.evaluation import evaluate
    from bench.peers.harness import Policy
    from common.envs import derive_seed

    program = torch.export.load(str(run_dir / "policy.pt2")).module()
    returns = evaluate(
        Policy(program), "CartPole-v1", episodes, derive_seed(seed, "check"), greedy=True
    )
    return {
        "check_mean": round(float(returns.mean()), 2),
        "check_std": round(float(returns.std()), 2),
        "check_min": float(returns.min()),
    }


def missing_peers(names) -> list:
    """Lines naming the peers whose packages are not installed."""
    import importlib.util

    out = []
    for name in names:
        if name in PEERS:
            module = PEERS[name][1]
            if importlib.util.find_spec(module) is None:
                out.append(f"{name} needs {PEERS[name][2]}: pip install -r requirements-bench.txt")
    return out


def medians(rows, name: str) -> dict:
    mine = [r for r in rows if r["config"] == name]
    solved = [r for r in mine if r["solved"]]
    out = {"config": name, "runs": len(mine), "solved": len(solved)}
    if solved:
        walls = [r["process_wall_s"] for r in solved if r["process_wall_s"] is not None]
        out["median_wall_s"] = round(statistics.median(walls), 1) if walls else None
        out["median_solve_s"] = round(statistics.median(r["solve_s"] for r in solved), 1)
        out["median_env_steps"] = statistics.median(r["env_steps"] for r in solved)
        out["median_learner_steps"] = statistics.median(r["learner_steps"] for r in solved)
    return out


def ratios(summary: dict) -> list:
    """ours / peer on the medians, for every (our config, peer) pair where both solved some seed."""
    out = []
    for ours, a in summary.items():
        for peer, b in summary.items():
            if ours in PEERS or peer not in PEERS or not a["solved"] or not b["solved"]:
                continue
            out.append(
                {
                    "ours": ours,
                    "peer": peer,
                    "solved": f"{a['solved']}/{a['runs']} vs {b['solved']}/{b['runs']}",
                    "wall": round(a["median_wall_s"] / b["median_wall_s"], 3)
                    if a["median_wall_s"]
                    else None,
                    "env_steps": round(a["median_env_steps"] / b["median_env_steps"], 3),
                }
            )
    return out


def machine() -> dict:
    return describe(("torch", "ray", "gymnasium", "stable-baselines3"))


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--configs", nargs="+", default=["default"], choices=sorted([*CONFIGS, *PEERS])
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="run seeds (launch.py --seed)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="each run's time budget (launch.py --max-seconds)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the rows and the summary as JSON here"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary (medians, ratios) as one JSON line at the end",
    )
    parser.add_argument(
        "--keep-runs",
        type=Path,
        default=None,
        help="keep every run directory (curves, metrics, policies) below this folder",
    )
    parser.add_argument(
        "--check-policy",
        action="store_true",
        help="also load each of our runs' exported policy.pt2 and play 100 greedy episodes on unseen seeds",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="run our configs' seeds as Ray Tune trials through sweep.py (no whole-process wall times)",
    )
    parser.add_argument(
        "--trial-cpus", type=float, default=2.0, help="with --tune: CPUs per trial of a Ray config"
    )
    parser.add_argument(
        "--compile-cache",
        choices=("user", "fresh", "off"),
        default="user",
        help="the compiled-loss cache our runs find: the user's as it is (warm once built), "
        "a fresh empty one per run (a first run on a new machine), or none",
    )
    parser.add_argument(
        "extra", nargs="*", help="flags passed to launch.py (after --); the peers ignore them"
    )
    args = parser.parse_args()
    missing = missing_peers(args.configs)
    if missing:
        parser.error("; ".join(missing))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_root = args.keep_runs or Path(tmp)

        def keep(row):
            policy = Path(row.pop("run_dir") or "") / "policy.pt2"
            if args.check_policy and row["config"] not in PEERS and policy.exists():
                row.update(check_policy(policy.parent, row["seed"]))
            rows.append(row)
            print(json.dumps(row), flush=True)

        for name in args.configs:  # Tune runs all of a config's seeds at once
            if args.tune and name not in PEERS:
                trials = run_seeds_as_trials(
                    name, args.seeds, args.extra, args.max_seconds, run_root, args.trial_cpus
                )
                for row in trials:
                    keep(row)
        # one process each, seed by seed: the machine's drift hits every config alike
        for seed in args.seeds:
            for name in args.configs:
                if not (args.tune and name not in PEERS):
                    keep(
                        dict(
                            run_one(
                                name,
                                seed,
                                args.extra,
                                args.max_seconds,
                                run_root,
                                args.compile_cache,
                            ),
                            run_dir=str(run_dir(run_root, name, seed)),
                        )
                    )
    print(
        f"\n{'config':<12}{'seed':>5}{'solved':>8}{'wall s':>9}{'solve s':>9}{'env steps':>11}{'learner':>9}"
        f"{'policy.pt2':>12}"
    )
    for r in rows:
        check = f"{r['check_mean']:.1f}" if "check_mean" in r else "-"
        print(
            f"{r['config']:<12}{r['seed']:>5}{str(r['solved']):>8}{r.get('process_wall_s') or 0:>9.1f}"
            f"{r.get('solve_s') or 0:>9.1f}{r.get('env_steps') or 0:>11,}{r.get('learner_steps') or 0:>9,}{check:>12}"
        )
    summary = {name: medians(rows, name) for name in args.configs}
    for name, m in summary.items():
        if m["solved"]:
            wall = "-" if m["median_wall_s"] is None else f"{m['median_wall_s']:.1f} s"
            print(
                f"{name}: {m['solved']}/{m['runs']} solved; median wall {wall}, "
                f"median env steps {m['median_env_steps']:,.0f}"
            )
        else:
            print(f"{name}: 0/{m['runs']} solved")
    pairs = ratios(summary)
    if pairs:
        print("\nours / peer on the medians (below 1: ours is faster / needs fewer env steps)")
        for p in pairs:
            wall = "-" if p["wall"] is None else f"{p['wall']:.2f}x"
            print(
                f"{p['ours']} / {p['peer']}: wall {wall}, env steps {p['env_steps']:.2f}x "
                f"(seeds solved {p['solved']})"
            )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m bench.solve " + shlex.join(sys.argv[1:]),
        "machine": machine(),
        "seeds": args.seeds,
        "compile_cache": args.compile_cache,
        "max_seconds": args.max_seconds,
        "summary": summary,
        "ratios": pairs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
