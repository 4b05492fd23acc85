"""Fault probes: each way a run can go wrong, run for real as a user would (`python launch.py`,
on a local Ray unless the probe says in-process), and how it ended: the exit code, the lines on
stderr, whether one was a traceback, summary.json's stop_reason, temp files left in the run
folder, and the run's processes still alive 10 s after its end.

    python -m bench.faults [--only NAME ...] [--out FILE]   (FILE keeps the probes not rerun)

A probe passes when it ends with exit 2 before anything is written, or with a summary.json naming
the reason, in at most 3 stderr lines, without a traceback, leaving no temp file and no process.
The envs that misbehave are tests/flaky_envs.py's, loaded by every process of the run. The full
disk needs root (a tmpfs is mounted); elsewhere that probe is reported as not run.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import files
from common.cli import script_parser

ROOT = Path(__file__).resolve().parents[1]
MAX_STDERR_LINES = 3
# a local Ray on 2 CPUs without the dashboard that never solves, a run named `run`
RAY_RUN = ("--num-cpus", "2", "--no-dashboard", "--solve-return", "1e9", "--eval-episodes", "3",
           "--sampled-eval-episodes", "1", "--run-name", "run")  # fmt: skip
IN_PROCESS_RUN = ("--in-process", *RAY_RUN[3:])
FLAKY = "tests.flaky_envs:"
RUN_DIR = object()  # in a probe's flags: the folder of the run named `run`


def launch(root: Path, *flags, during=None, timeout_s: float = 300, script="launch.py") -> dict:
    """Run `python SCRIPT --run-root root FLAGS` in its own session; `during(proc, run_dir)` acts on
    it while it runs (a signal, say). What it ended with (module docstring)."""
    proc = subprocess.Popen(
        [sys.executable, script, *([] if script != "launch.py" else ["--run-root", str(root)]),
         *map(str, flags)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        if during is not None:
            during(proc, root / "run")
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    return outcome(proc, err, root / "run")


def outcome(proc: subprocess.Popen, err: str, run_dir: Path) -> dict:
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    deadline, alive = time.monotonic() + 10, ["?"]
    while alive and time.monotonic() < deadline:
        alive = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        alive = alive.stdout.split()
        time.sleep(0.2)
    lines = err.splitlines()
    return {
        "exit": proc.returncode,
        "stderr_lines": len(lines),
        "stderr": lines[-MAX_STDERR_LINES:],
        "traceback": "Traceback" in err,
        "stop_reason": summary.get("stop_reason"),
        "faults": {k: v for k, v in summary.get("faults", {}).items() if v},
        "temp_files": sorted(str(p) for p in run_dir.rglob(f"*{files.TMP_SUFFIX}"))
        if run_dir.exists() else [],
        "processes_after_10s": alive,
    }  # fmt: skip


def wait_for(predicate, proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the probe's run ended or stalled (exit {proc.poll()})")
        time.sleep(0.5)


def trained(run_dir: Path) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and '"learner/steps"' in path.read_text()


def signal_once_trained(signum):
    def during(proc, run_dir):
        wait_for(lambda: trained(run_dir), proc, 180)
        proc.send_signal(signum)

    return during


def run_with(*flags):
    """Settings refused before anything starts."""
    return lambda root: launch(root, *flags)


def taken_port(root: Path) -> dict:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        return launch(root, *RAY_RUN, "--metrics-export-port", held.getsockname()[1])


def beside_a_running_run(*second_flags, ready=lambda run_dir: (run_dir / "config.json").exists()):
    """A second run with second_flags once a first Ray run named `run` is `ready`; the first is
    then ended with SIGTERM, and how it ended is added."""
    return lambda root: _beside(root, second_flags, ready)


def _beside(root: Path, second_flags, ready) -> dict:
    first = subprocess.Popen(
        [sys.executable, "launch.py", "--run-root", str(root), *RAY_RUN, "--max-seconds", "120"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: ready(root / "run"), first, 120)
        second = launch(root, *(root / "run" if f is RUN_DIR else f for f in second_flags))
        first.send_signal(signal.SIGTERM)
        second["first_run_exit"] = first.wait(timeout=120)
        second["first_run_stop_reason"] = json.loads((root / "run" / "summary.json").read_text())[
            "stop_reason"
        ]
    finally:
        first.kill()
    return second


def sigkill_then_resume(root: Path) -> dict:
    """SIGKILL 40 s into a run that checkpoints every 60 s; then --resume for 20 s."""
    killed = launch(
        root, *RAY_RUN, "--checkpoint-every-s", 60, "--max-seconds", 300,
        during=lambda proc, run_dir: (time.sleep(40), proc.kill()),
    )  # fmt: skip
    resumed = launch(root, "--resume", root / "run", "--max-seconds", 20)
    return {**resumed, "killed_exit": killed["exit"],
            "processes_after_kill_10s": killed["processes_after_10s"]}  # fmt: skip


def full_disk(root: Path) -> dict:
    """The run folder on a 1.5 MB tmpfs, a checkpoint every round, all kept."""
    disk = root / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        return {"not_run": mounted.stderr.strip() or "mount failed"}
    try:
        return launch(disk, *RAY_RUN, "--checkpoint-every-s", 0, "--keep-checkpoints", 1000,
                      "--max-seconds", 300)  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def another_envs_policy(root: Path) -> dict:
    """evaluate.py on a CartPole run's policy.pt2 in an Acrobot run's folder."""
    launch(root / "cartpole", *IN_PROCESS_RUN, "--max-env-steps", 2000)
    shutil.copytree(root / "cartpole" / "run", root / "run")
    config = json.loads((root / "run" / "config.json").read_text())
    (root / "run" / "config.json").write_text(json.dumps({**config, "env": "Acrobot-v1"}))
    (root / "run" / "summary.json").unlink()
    return launch(root, root / "run", "--episodes", 2, script="evaluate.py")


def preset_of_another_env(root: Path) -> dict:
    """A preset's solve threshold (Pong's 18) must not judge CartPole: config.json's is unset."""
    result = launch(root, "--in-process", "--run-name", "run", "--eval-episodes", 3,
                    "--preset", "atari-pong", "--env", "CartPole-v1", "--torso", "mlp",
                    "--max-env-steps", 2000)  # fmt: skip
    solve_return = json.loads((root / "run" / "config.json").read_text())["solve_return"]
    if solve_return is not None:
        result["stop_reason"] = f"judged by the preset's solve_return {solve_return}"
    return result


# name -> (what is probed, how, the exit codes and stop reasons that pass)
PROBES = {
    "flag-prefix": ("--lr 1 (was --lr-decay-steps 1)", run_with("--lr", 1), {2: None}),
    "unknown-flag": ("--learning-rat 0.1", run_with("--learning-rat", 0.1), {2: None}),
    "mc-with-model-q": ("--value-target mc --retrace-q model",
                        run_with("--value-target", "mc", "--retrace-q", "model"), {2: None}),
    "unroll-past-sequence": ("--unroll-steps 100", run_with("--unroll-steps", 100), {2: None}),
    "actors-beyond-cpus": ("--num-cpus 2 --num-actors 11",
                           run_with("--num-cpus", 2, "--num-actors", 11), {2: None}),
    "replay-ratio-inf": ("--replay-ratio inf", run_with("--replay-ratio", "inf"), {2: None}),
    "metrics-port-taken": ("--metrics-export-port of a bound socket", taken_port, {2: None}),
    "replay-ratio-0-in-process": ("--replay-ratio 0 (no limit) in-process, 20 s budget",
                                  run_with(*IN_PROCESS_RUN, "--replay-ratio", 0, "--max-seconds", 20),
                                  {0: "time budget spent"}),
    "replay-ratio-1e9-in-process": ("--replay-ratio 1e9 in-process, 20 s budget",
                                    run_with(*IN_PROCESS_RUN, "--replay-ratio", 1e9,
                                            "--max-seconds", 20), {0: "time budget spent"}),
    "preset-of-another-env": ("--preset atari-pong --env CartPole-v1 --torso mlp",
                              preset_of_another_env, {0: "env step budget spent"}),
    "same-run-name": ("a second Ray run of a running one's --run-name",
                      beside_a_running_run(*RAY_RUN, "--max-seconds", 60), {2: None}),
    "resume-a-running-run": ("--resume of a running Ray run's folder, once it has a checkpoint",
                             beside_a_running_run("--resume", RUN_DIR, ready=lambda run_dir: any(
                                 (run_dir / "checkpoints").glob("ckpt-*.pt"))), {2: None}),
    "sigterm": ("SIGTERM to the driver of a Ray run",
                lambda root: launch(root, *RAY_RUN, during=signal_once_trained(signal.SIGTERM)),
                {143: "sigterm"}),
    "sighup": ("SIGHUP to the driver of a Ray run",
               lambda root: launch(root, *RAY_RUN, during=signal_once_trained(signal.SIGHUP)),
               {129: "sighup"}),
    "sigkill-then-resume": ("SIGKILL at 40 s (--checkpoint-every-s 60), then --resume",
                            sigkill_then_resume, {0: "time budget spent"}),
    "full-disk": ("run folder on a 1.5 MB tmpfs (Ray)", full_disk, {1: "disk full"}),
    "float64-beyond-float32": ("observations of 1e39 (Ray)",
                               run_with(*RAY_RUN, "--env", FLAKY + "HugeObsCartPole-v0",
                                       "--max-seconds", 300), {1: "bad data"}),
    "nan-1-in-1000": ("NaN in 1 of 1,000 observations (Ray)",
                      run_with(*RAY_RUN, "--env", FLAKY + "NanOneIn1000-v0",
                              "--max-env-steps", 20000), {0: "env step budget spent"}),
    "wrong-shaped-obs-once": ("one observation of shape (2,) per env instance (Ray)",
                              run_with(*RAY_RUN, "--env", FLAKY + "WrongShapeOnce-v0",
                                       "--max-env-steps", 5000), {0: "env step budget spent"}),
    "wrong-shaped-obs-every-episode": ("an observation of shape (2,) in every episode (Ray)",
                                       run_with(*RAY_RUN, "--env", FLAKY + "WrongShapeEvery100-v0",
                                                "--max-env-steps", 5000), {1: "error"}),
    "env-stall-12s": ("one 12 s step per env instance (Ray)",
                      run_with(*RAY_RUN, "--env", FLAKY + "StallOnce-v0",
                              "--max-env-steps", 5000), {0: "env step budget spent"}),
    "evaluate-another-envs-policy": ("evaluate.py on another env's policy.pt2",
                                     another_envs_policy, {2: None}),
}  # fmt: skip


def passed(result: dict, allowed: dict) -> bool:
    return (
        result.get("exit") in allowed
        and result["stop_reason"] == allowed[result["exit"]]
        and result["stderr_lines"] <= MAX_STDERR_LINES
        and not result["traceback"]
        and not result["temp_files"]
        and not result["processes_after_10s"]
    )


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(PROBES), help="these probes only")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    results = {}
    print(f"{'probe':30} {'exit':>4} {'stderr':>6} {'trace':>5} {'stop_reason':24} pass")
    for name in args.only or PROBES:
        what, probe, allowed = PROBES[name]
        with tempfile.TemporaryDirectory(prefix=f"probe-{name}-") as tmp:
            try:
                result = probe(Path(tmp))
            except Exception as exc:  # the probe's own set-up failed: say so, go on
                result = {"not_run": f"{type(exc).__name__}: {exc}"}
        if "not_run" not in result:
            result["passed"] = passed(result, allowed)
            print(f"{name:30} {result['exit']:>4} {result['stderr_lines']:>6} "
                  f"{'yes' if result['traceback'] else 'no':>5} {result['stop_reason'] or '-':24} "
                  f"{'yes' if result['passed'] else 'NO'}", flush=True)  # fmt: skip
            for line in result["stderr"]:
                print(f"    {line[:200]}")
        else:
            print(f"{name:30} not run: {result['not_run']}")
        results[name] = {"what": what, "date": time.strftime("%Y-%m-%d %H:%M"), **result}
    if args.out:  # probes run before (--only another set) are kept
        before = json.loads(args.out.read_text())["probes"] if args.out.exists() else {}
        payload = {"probes": {**before, **results}}
        files.write_atomic(args.out, json.dumps(payload, indent=1).encode())
    return 0 if all(r.get("passed", True) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
