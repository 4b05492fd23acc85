"""driver/reaper.py on plain processes (the Ray case: tests/test_launch.py's SIGKILL test)."""

import subprocess
import time

import psutil

from driver import reaper


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def test_the_watcher_kills_its_processes_when_the_pipe_closes_and_not_before():
    a, b = sleeper(), sleeper()
    try:
        watcher = reaper.watch([a.pid, b.pid])
        time.sleep(0.5)
        assert watcher.poll() is None and a.poll() is None and b.poll() is None
        reaper.release(watcher)
        assert watcher.returncode == 0
        assert a.wait(timeout=5) == -9 and b.wait(timeout=5) == -9
    finally:
        a.kill(), b.kill()


def test_a_pid_that_now_names_another_process_is_left_alone():
    proc = sleeper()
    try:
        started = psutil.Process(proc.pid).create_time()
        assert not reaper.kill_if_same(proc.pid, started - 1.0)
        time.sleep(0.2)
        assert proc.poll() is None
        assert reaper.kill_if_same(proc.pid, started)
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()


def test_no_processes_no_watcher():
    assert reaper.watch([]) is None
    reaper.release(None)
