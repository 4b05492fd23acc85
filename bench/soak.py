"""Soak test: memory of every process of a long training run.

Starts `python launch.py` (local Ray, CartPole by default) for a given length with the stop on
solving switched off (--solve-return 1e9: it trains on for the whole length), and every
--interval seconds samples the resident memory (RSS) of the driver and of every process
below it: Ray's gcs_server, raylet, dashboard and agents, and each worker by its Ray name
(ray::SelfPlayActor, ray::Learner, ...). It also counts the run's progress from its
metrics.jsonl: actor chunks (collect calls answered), learner steps and env steps, so a
growth can be read per call as well as per minute (on a shared machine the rate varies).

At the end it prints, per process: RSS at its first and last sample, the least-squares slope
in MB/min over all samples and over the last half, and the last half's slope per 1000 actor
chunks and per 1000 learner updates; it writes the samples as JSON and a plot of RSS over time.

  python -m bench.soak --minutes 60 --out docs/soak-1h.json --plot docs/soak-1h.png
  python -m bench.soak --minutes 6 --interval 20 -- --num-actors 2     # after --: launch.py flags
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import psutil
except ImportError:  # ray[default] ships its own copy, on the path once ray is imported
    import ray  # noqa: F401

    # isort: split
    import psutil

from bench.host import describe
from common.cli import script_parser

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def process_label(proc: psutil.Process) -> str:
    """A stable name for one process of the run: Ray's component name or the worker's class."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    first = cmd[0] if cmd else name
    if first.startswith("ray::"):  # a worker: ray::Learner.train -> ray::Learner
        return first.split()[0].split(".")[0]
    # a dashboard module: ray-dashboard-StateHead-0 (...)
    if first.startswith("ray-dashboard-"):
        return first.split()[0]
    text = " ".join(cmd)
    if "multiprocessing.forkserver" in text or "multiprocessing.resource_tracker" in text:
        return "dashboard_" + ("forkserver" if "forkserver" in text else "resource_tracker")
    for key in (
        "gcs_server",
        "raylet",
        "dashboard_agent",
        "runtime_env/agent",
        "log_monitor",
        "monitor.py",
        "dashboard.py",
        "launch.py",
    ):
        if key in text:
            return {
                "dashboard.py": "dashboard",
                "runtime_env/agent": "runtime_env_agent",
                "monitor.py": "monitor",
                "launch.py": "driver",
            }.get(key, key)
    return name


def sample(root: psutil.Process) -> dict:
    """pid -> (label, RSS in MB) for root and all its descendants alive now."""
    out = {}
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            out[proc.pid] = (process_label(proc), proc.memory_info().rss / MB)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def progress(metrics_path: Path) -> dict:
    """Counts so far from a run's metrics.jsonl: actor chunks (one row per collect call
    answered), learner steps and env steps."""
    chunks, learner_steps, env_steps = 0, 0, 0
    try:
        with open(metrics_path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line being written
                chunks += "actor/env_steps_per_s" in row
                learner_steps = max(learner_steps, int(row.get("learner/steps", 0)))
                env_steps = max(env_steps, int(row.get("env_steps") or 0))
    except FileNotFoundError:
        pass
    return {"chunks": chunks, "learner_steps": learner_steps, "env_steps": env_steps}


def slope(xs, ys) -> float:
    """Least-squares slope of ys over xs (nan with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def summarize(samples: list) -> list:
    """Per process (label#pid): first and last RSS, slope in MB/min over all its samples and over
    the run's last half, and the last half's MB per 1000 actor chunks and per 1000 learner updates."""
    end_t = samples[-1]["t"]
    rows, labels = {}, {}
    for s in samples:
        for pid, (label, rss) in s["rss"].items():
            rows.setdefault(int(pid), []).append(
                (s["t"], s["progress"]["chunks"], rss, s["progress"]["learner_steps"])
            )
            labels[int(pid)] = label  # the last: a worker starts as ray::IDLE
    table = []
    for pid, points in sorted(rows.items(), key=lambda kv: (labels[kv[0]], kv[0])):
        label = labels[pid]
        late = [p for p in points if p[0] >= end_t / 2]
        ts, rss = [p[0] / 60 for p in points], [p[2] for p in points]
        per_chunk = slope([p[1] for p in late], [p[2] for p in late])
        per_update = slope([p[3] for p in late], [p[2] for p in late])
        table.append(
            {
                "process": label,
                "pid": pid,
                "samples": len(points),
                "start_mb": round(rss[0], 1),
                "end_mb": round(rss[-1], 1),
                "mb_per_min": round(slope(ts, rss), 3),
                "late_mb_per_min": round(slope([p[0] / 60 for p in late], [p[2] for p in late]), 3),
                "late_mb_per_1k_chunks": round(1000 * per_chunk, 3),
                "late_mb_per_1k_updates": round(1000 * per_update, 3),
            }
        )
    return table


def format_table(table: list) -> str:
    head = f"{'process':<28}{'pid':>8}{'n':>4}{'start MB':>10}{'end MB':>9}{'MB/min':>9}{'last half':>11}{'/1k chunks':>12}{'/1k updates':>12}"
    lines = [head]
    for r in table:
        lines.append(
            f"{r['process']:<28}{r['pid']:>8}{r['samples']:>4}{r['start_mb']:>10.1f}{r['end_mb']:>9.1f}"
            f"{r['mb_per_min']:>9.2f}{r['late_mb_per_min']:>11.2f}{r['late_mb_per_1k_chunks']:>12.2f}"
            f"{r['late_mb_per_1k_updates']:>12.2f}"
        )
    return "\n".join(lines)


def plot(samples: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for s in samples:
        for pid, (label, rss) in s["rss"].items():
            series.setdefault(pid, (label, []))[1].append((s["t"] / 60, rss))
    fig, ax = plt.subplots(figsize=(11, 5))
    # with matplotlib's 10 colours: 30 distinct lines
    styles = ("-", "--", ":")
    for k, (pid, (label, points)) in enumerate(sorted(series.items(), key=lambda kv: kv[1][0])):
        if len(points) > 1:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                styles[k // 10 % 3],
                label=f"{label} ({pid})",
            )
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = script_parser(__doc__, epilog=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="training length (launch.py --max-seconds)"
    )
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, help="write samples and table as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG of RSS over time here")
    parser.add_argument("launch_args", nargs="*", help="after --: extra launch.py flags")
    args = parser.parse_args(argv)
    for name in ("minutes", "interval"):
        if not getattr(args, name) > 0:
            print(
                f"soak.py: error: --{name}={getattr(args, name)} is invalid: must be > 0",
                file=sys.stderr,
            )
            return 2
    run_root = Path(tempfile.mkdtemp(prefix="soak-"))
    command = [
        sys.executable,
        "launch.py",
        "--max-seconds",
        str(args.minutes * 60),
        "--solve-return",
        "1e9",
        "--max-env-steps",
        str(10**12),
        "--run-root",
        str(run_root),
        "--run-name",
        "soak",
        *args.launch_args,
    ]
    print("soak: " + " ".join(command), flush=True)
    log = open(run_root / "launch.log", "w")
    start = time.monotonic()
    # A Ray of its own even where a `ray start` cluster runs on this machine (ray.init would join it).
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS", "local")}
    child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    root = psutil.Process(child.pid)
    samples = []
    next_t = args.interval
    try:
        while child.poll() is None:
            time.sleep(max(0.0, min(1.0, start + next_t - time.monotonic())))
            if time.monotonic() - start < next_t:
                continue
            next_t += args.interval
            # Only while training: the last sample before --max-seconds, never the finish.
            if time.monotonic() - start > args.minutes * 60 + 10:
                continue
            rss = sample(root)
            s = {
                "t": round(time.monotonic() - start, 1),
                "progress": progress(run_root / "soak" / "metrics.jsonl"),
                "rss": {str(pid): v for pid, v in rss.items()},
            }
            samples.append(s)
            top = ", ".join(f"{label} {mb:.0f}" for label, mb in sorted(rss.values()))
            print(
                f"soak: t={s['t']:7.1f} s chunks={s['progress']['chunks']} learner_steps="
                f"{s['progress']['learner_steps']} env_steps={s['progress']['env_steps']} | MB: {top}",
                flush=True,
            )
    finally:
        if child.poll() is None:
            child.terminate()
        code = child.wait()
        log.close()
    if code != 0:
        print(
            f"soak: launch.py exited with {code}; its output is in {run_root / 'launch.log'}",
            file=sys.stderr,
        )
    if len(samples) < 2:
        print("soak: fewer than two samples; nothing to summarize", file=sys.stderr)
        return 1
    table = summarize(samples)
    print(format_table(table))
    last = samples[-1]["progress"]
    print(
        f"soak: {samples[-1]['t'] / 60:.1f} min, {last['chunks']} actor chunks, {last['learner_steps']} learner "
        f"steps, {last['env_steps']} env steps; launch.py exit code {code}; run in {run_root}"
    )
    if args.out:
        result = {
            "command": command,
            "minutes": args.minutes,
            "interval_s": args.interval,
            "exit_code": code,
            "host": describe(["ray", "torch", "psutil"]),
            "table": table,
            "samples": samples,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(samples, args.plot, f"RSS per process, {args.minutes:g} min run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
