"""A local Ray's processes end with the driver, however the driver ends (SIGKILL, the OOM killer).

ray.init starts the GCS and the raylet so that the kernel kills them when the driver dies, but
the raylet's two agents (dashboard and runtime-env) only notice the raylet's death themselves and
then spend 60 s reporting it to the GCS, which is already gone (Ray 2.60's process watcher): after
a SIGKILLed driver they lived on for 1-2 minutes. This watcher runs beside the driver and blocks on
a pipe whose write end only the driver holds; when the driver dies the kernel closes it, and the
watcher kills the local Ray's processes listed when it started. Each is named by pid and start
time, so a pid the system has since given to another process is left alone.

    python -m driver.reaper PID:START_TIME ...   (stdin: the driver's pipe)
"""

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def watch(pids: list[int]) -> subprocess.Popen | None:
    """Start the watcher over the processes `pids` and their descendants as they are now (a
    raylet's agents, the dashboard's modules); None when none is alive. The driver keeps the
    returned process (its stdin is the pipe) and calls `release` when it has shut Ray down."""
    named = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                named[process.pid] = f"{process.pid}:{process.create_time()!r}"
    if not named:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "driver.reaper", *named.values()],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
    )


def release(watcher: subprocess.Popen | None) -> None:
    """Close the driver's end of the pipe: the watcher kills whatever of its list is still alive
    (after ray.shutdown, normally nothing) and exits."""
    if watcher is not None:
        watcher.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watcher.wait(timeout=10)


def kill_if_same(pid: int, start_time: float) -> bool:
    """SIGKILL process `pid` if it is still the one that started at `start_time`."""
    try:
        process = psutil.Process(pid)
        if process.create_time() != start_time:
            return False
        process.kill()
        return True
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole foreground group; finishing the run is the driver's job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns when the driver has closed the pipe or died
    for item in argv:
        pid, start_time = item.split(":", 1)
        kill_if_same(int(pid), float(start_time))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
