"""Train Muesli: `python launch.py [--preset NAME] [--field-name VALUE ...]`.

Parses and checks the command line (common/config.py, common/preflight.py), places the
components (driver/wiring.py: a local Ray by default, `--address` joins a cluster,
`--in-process` runs them all in this process) and trains them (driver/trainer.py) until a
separate greedy evaluation reaches the solve threshold or a budget runs out. The run
directory holds config.json, metrics.jsonl, tensorboard/, checkpoints/, learning_curve.png
and policy.pt2 (torch.export; load with torch.export.load, no project code needed).

Bad input fails before Ray starts or anything is written (exit 2, one line). The first
Ctrl-C, SIGTERM or SIGHUP stops the run as a budget would (final checkpoint, policy, summary);
a second one stops it at once. A run that fails after start-up still writes summary.json, with
the error; on a full disk with one line naming the folder and the space needed (common/files.py). Exit codes (README.md, "Stopping"): 0 finished or stopped by Ctrl-C, 1 failed, 2 bad
input, 128 + N stopped by signal N (143 SIGTERM, 129 SIGHUP; 130 a second Ctrl-C).
"""

import contextlib
import gc
import os
import signal
import sys
import traceback

from common import envs as envs_lib
from common import files, placement, preflight
from common.config import ConfigError, parse_config
from common.vector_env import EnvFailure
from driver.bad_data import BadData
from driver.trainer import Trainer, make_run_dir, train
from driver.wiring import placed
from learner import checkpoint, compiled


def format_summary(s: dict) -> str:
    head = "solved" if s["solved"] else f"stopped ({s['stop_reason']})"
    at = s["solved_at"] or {}
    return (
        f"{head} {s['env']} [{s['preset']}, seed {s['seed']}] in {at.get('seconds', s['seconds']):.1f} s, "
        f"{at.get('env_steps', s['env_steps']):,} env steps, {s['learner_steps']:,} learner steps: "
        f"greedy eval {s['greedy_eval_mean']:.1f}, sampled eval {s['sampled_eval_mean']:.1f} "
        f"-> {s['run_dir']}"
    )


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined, if any (an in-process run never imports Ray)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        from driver import on_ray

        on_ray.shutdown_ray()


STOP_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "sigterm", signal.SIGHUP: "sighup"}


class StopAtOnce(KeyboardInterrupt):
    """A second stop signal (SIGTERM or SIGHUP; a second Ctrl-C is a plain KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def detach_from_a_closed_terminal(trainer: Trainer) -> None:
    """After SIGHUP the terminal may be gone, and every print would raise OSError (EIO): the
    rest of the run writes its output to /dev/null instead (its files hold everything)."""
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = trainer.log.stream = devnull


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer):
    """The first Ctrl-C (SIGINT), SIGTERM (Kubernetes, `ray job stop`, systemd, Docker) or SIGHUP
    (a closed terminal) asks the trainer to stop as a spent budget would (final checkpoint,
    policy, summary); a second one raises KeyboardInterrupt at once. A signal that was ignored
    when the program started (`nohup`, a shell's background job) stays ignored. These handlers
    replace the one ray.init installs for SIGTERM (sys.exit, which wrote nothing)."""

    def on_signal(signum, frame):
        if trainer.stop_request:
            raise KeyboardInterrupt if signum == signal.SIGINT else StopAtOnce(signum)
        trainer.stop_request = STOP_REASONS[signum]
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        try:
            print(
                f"\n{trainer.stop_request}: finishing (final checkpoint, policy, summary); {again} stops at once",
                flush=True,
            )
        except OSError:
            detach_from_a_closed_terminal(trainer)

    previous = {signum: signal.getsignal(signum) for signum in STOP_REASONS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_code(summary: dict) -> int:
    """0 for a run that ended on its own or by Ctrl-C; 128 + N for one that signal N stopped
    (the shell's convention), so a scheduler that sent SIGTERM sees the run did not finish."""
    return {"sigterm": 128 + signal.SIGTERM, "sighup": 128 + signal.SIGHUP}.get(
        summary["stop_reason"], 0
    )


def error_line(exc: Exception) -> int:
    print(f"launch.py: error: {exc}", file=sys.stderr, flush=True)
    return 2


def disk_full(trainer: Trainer, exc: Exception) -> int:
    """A write refused for want of space: one line naming the folder and the space it needed,
    summary.json in the space reserved for it (common/files.py), nothing else attempted (every
    write would fail). Exit 1: the run failed; --resume continues it once there is room."""
    if not isinstance(exc, files.DiskFull):
        # metrics.jsonl or TensorBoard, a line at a time: going on needs about a checkpoint's size
        newest = checkpoint.list_checkpoints(trainer.run_dir / "checkpoints")
        needed = newest[0].stat().st_size if newest else None
        exc = files.DiskFull(
            trainer.run_dir, "its logs and next checkpoint", needed, files.full_cause(exc)
        )
    where = f"summary.json in {trainer.run_dir}"
    try:
        trainer.fail("disk full", str(exc))
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
        cfg = parse_config(argv)
        info = envs_lib.describe(cfg.env)
        cfg.network_spec(info)  # a torso that cannot take these observations stops here
        resume = preflight.check(cfg, info)
        preflight.check_env_starts(cfg)
    except (ConfigError, envs_lib.EnvError, checkpoint.CheckpointError, EnvFailure) as exc:
        return error_line(exc)
    try:
        # num_actors resolved before config.json is written
        cfg, where = placed(cfg, connect=True)
        run_dir = make_run_dir(cfg)
    except (ConfigError, placement.PlacementError) as exc:
        shutdown_ray()
        return error_line(exc)
    trainer = Trainer(cfg, info, run_dir, resume, where)
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
        trainer.fail(getattr(exc, "reason", "error"), str(exc))
        print(f"launch.py: error: {exc} (summary.json in {run_dir})", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        if files.full_cause(exc):
            return disk_full(trainer, exc)
        traceback.print_exc()
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        trainer.fail("error", message)
        print(
            f"launch.py: error: the run failed: {message} (summary.json in {run_dir})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        shutdown_ray()
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
