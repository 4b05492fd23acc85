"""driver/run_lock.py: one live run per folder, the lock gone with its process however it ends."""

import os
import subprocess
import sys

import pytest

from driver import run_lock

HOLD = "import sys, time; from driver import run_lock; run_lock.hold(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def held_by_a_child(folder) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "held\n"
    return child


def test_a_live_holder_is_named_and_keeps_the_folder_until_it_is_killed(tmp_path):
    child = held_by_a_child(tmp_path)
    try:
        assert run_lock.holder(tmp_path) == child.pid
        with pytest.raises(run_lock.RunInUse, match=f"in use by the run of pid {child.pid}"):
            run_lock.hold(tmp_path)
    finally:
        child.kill()
        child.wait()
    # SIGKILL: the kernel dropped the lock with the process
    assert run_lock.holder(tmp_path) is None
    run_lock.hold(tmp_path)
    try:
        assert (tmp_path / run_lock.LOCK_NAME).read_text() == str(os.getpid())
        assert run_lock.holder(tmp_path) is None  # this process's own lock does not stop it
        run_lock.hold(tmp_path)  # again: a no-op
    finally:
        run_lock.release(tmp_path)
    child = held_by_a_child(tmp_path)  # released: another process can take it
    child.kill()
    child.wait()


def test_a_folder_never_locked_is_free(tmp_path):
    assert run_lock.holder(tmp_path) is None
    run_lock.release(tmp_path)  # not held: nothing happens


def test_both_checks_refuse_the_resume_of_a_held_folder_in_the_same_line(tmp_path):
    """preflight's check, before anything starts, and make_run_dir's, for two resumes at once
    (preflight's passed for both): one line naming the holder's pid."""
    import json

    from common import envs as envs_lib
    from common.config import ConfigError, parse_config, to_dict
    from driver import preflight
    from driver.trainer import make_run_dir

    config = json.dumps(to_dict(parse_config(["--num-cpus", "1"])))
    (tmp_path / "config.json").write_text(config)
    cfg = parse_config(["--resume", str(tmp_path)])
    child = held_by_a_child(tmp_path)
    try:
        line = (
            f"--resume={str(tmp_path)!r} is invalid: {tmp_path} is in use by the run of pid "
            f"{child.pid}, still running; allowed: --resume once that run has ended (Ctrl-C "
            "finishes it)"
        )
        # the folder holds no checkpoint: without the lock check this is "no readable checkpoint"
        with pytest.raises(ConfigError) as refused:
            preflight.check_resume(cfg, envs_lib.describe("CartPole-v1"))
        assert str(refused.value) == line
        with pytest.raises(ConfigError) as refused:
            make_run_dir(cfg)
        assert str(refused.value) == line
        assert (tmp_path / "config.json").read_text() == config
    finally:
        child.kill()
        child.wait()
