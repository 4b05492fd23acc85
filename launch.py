"""Train Muesli: `python launch.py [--preset NAME] [--field-name VALUE ...]`.

Parses the command line (common/config.py); muesli_ray.start (the Python API) checks it, places
the components (driver/wiring.py: a local Ray by default, `--address` joins a cluster,
`--in-process` runs them all in this process) and claims the run folder; driver/trainer.py trains
them until a separate greedy evaluation reaches the solve threshold or a budget runs out. The run
directory holds config.json, metrics.jsonl, tensorboard/, checkpoints/, learning_curve.png
and policy.pt2 (torch.export; load with torch.export.load, no project code needed).

Bad input fails before Ray starts or anything is written (exit 2, one line). The first
Ctrl-C, SIGTERM or SIGHUP stops the run as a budget would (final checkpoint, policy, summary);
a second one stops it at once. A run that fails after start-up still writes summary.json, with
the error; on a full disk with one line naming the folder and the space needed (common/files.py). Exit codes (README.md, "Stopping"): 0 finished or stopped by Ctrl-C, 1 failed, 2 bad
input, 128 + N stopped by signal N (143 SIGTERM, 129 SIGHUP; 130 a second Ctrl-C).
"""

import gc
import signal
import sys
import traceback

from common import files
from common.cli import exit_usage
from common.config import parse_config
from common.vector_env import EnvFailure
from driver.bad_data import BadData
from driver.stopping import STOP_REASONS, StopAtOnce, stop_on_signals
from driver.trainer import Trainer, train
from learner import compiled
from muesli_ray import BAD_INPUT, end, start


def format_summary(s: dict) -> str:
    head = "solved" if s["solved"] else f"stopped ({s['stop_reason']})"
    at = s["solved_at"] or {}
    return (
        f"{head} {s['env']} [{s['preset']}, seed {s['seed']}] in {at.get('seconds', s['seconds']):.1f} s, "
        f"{at.get('env_steps', s['env_steps']):,} env steps, {s['learner_steps']:,} learner steps: "
        f"greedy eval {s['greedy_eval_mean']:.1f}, sampled eval {s['sampled_eval_mean']:.1f} "
        f"-> {s['run_dir']}"
    )


# stop reasons of the signals other than Ctrl-C -> the signal (its exit code is 128 + N)
SIGNALLED = {reason: signum for signum, reason in STOP_REASONS.items() if signum != signal.SIGINT}


def cut_short(trainer, exc: Exception) -> int:
    """The run was finishing after SIGTERM or SIGHUP when a component failed: a signal sent to
    every process of the group or cgroup (systemd's default, `kill -- -PGID`) stops Ray's workers
    too. The summary names the signal and the newest checkpoint; the exit code is the signal's."""
    _, message = trainer.failure(exc)
    summary = trainer.fail(trainer.stop_request, f"the finish was cut short: {message}")
    print(
        f"launch.py: {trainer.stop_request}: the run's components were stopped too ({message}); "
        f"resume from {summary['checkpoint'] or 'the start (no checkpoint yet)'}",
        file=sys.stderr,
        flush=True,
    )
    return 128 + SIGNALLED[trainer.stop_request]


def exit_code(summary: dict) -> int:
    """0 for a run that ended on its own or by Ctrl-C; 128 + N for one that signal N stopped
    (the shell's convention), so a scheduler that sent SIGTERM sees the run did not finish."""
    return 128 + SIGNALLED[summary["stop_reason"]] if summary["stop_reason"] in SIGNALLED else 0


def disk_full(trainer: Trainer, exc: Exception) -> int:
    """A write refused for want of space: one line naming the folder and the space it needed,
    summary.json in the space reserved for it (common/files.py), nothing else attempted (every
    write would fail). Exit 1: the run failed; --resume continues it once there is room."""
    exc = trainer.disk_full(exc)
    where = f"summary.json in {trainer.run_dir}"
    try:
        trainer.fail(*trainer.failure(exc))
    except OSError as again:
        where = f"summary.json not written either: {again.strerror or again}"
    print(
        f"launch.py: error: {exc}; {exc.remedy}, then --resume {trainer.run_dir} ({where})",
        file=sys.stderr,
        flush=True,
    )
    return 1


def main(argv=None) -> int:
    try:
        trainer = start(parse_config(argv))
    except BAD_INPUT as exc:
        return exit_usage("launch.py", exc)
    cfg, info, run_dir = trainer.cfg, trainer.info, trainer.run_dir
    try:
        with stop_on_signals(trainer):
            summary = train(trainer)
    except StopAtOnce as exc:
        trainer.fail(f"{trainer.stop_request} twice", str(exc))
        print(
            f"launch.py: stopped at once (second signal: {exc}); resume from the newest checkpoint in {run_dir}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + exc.signum
    except KeyboardInterrupt:
        trainer.fail(f"{trainer.stop_request or 'interrupted'} twice", "KeyboardInterrupt")
        print(
            f"launch.py: stopped at once (second Ctrl-C); resume from the newest checkpoint in {run_dir}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    # the env stopped working or gives only bad data mid-run: a failed run, not a bad flag
    except (EnvFailure, BadData) as exc:
        trainer.fail(*trainer.failure(exc))
        print(f"launch.py: error: {exc} (summary.json in {run_dir})", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        if files.full_cause(exc):
            return disk_full(trainer, exc)
        if trainer.stop_request in SIGNALLED:
            return cut_short(trainer, exc)
        traceback.print_exc()
        _, message = trainer.failure(exc)
        trainer.fail("error", message)
        print(
            f"launch.py: error: the run failed: {message} (summary.json in {run_dir})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        end(trainer)
    print(format_summary(summary))
    building = compiled.build_after_run(cfg, info)
    if building:
        print(f"compiling the loss for later runs in the background (nice 19) into {building}")
    return exit_code(summary)


if __name__ == "__main__":
    status = main()
    # The interpreter's last garbage collection walks every object left (torch, Ray, the export's
    # tracing): about 1.5 s of the exit. Frozen objects are skipped; the process ends anyway.
    gc.freeze()
    sys.exit(status)
