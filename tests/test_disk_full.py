"""A full disk (common/files.py, launch.py): a real one, a small tmpfs mounted for the test (root
only: skipped elsewhere), where a run fills its disk with checkpoints. The run ends with one line
naming the folder and the space needed, exit 1, and a summary.json with the reason; it leaves no
temp file and nothing half-written, and every checkpoint it stored loads and resumes once there
is room again. An export or a first write that does not fit leaves nothing either."""

import contextlib
import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

import launch
from common import envs as envs_lib
from common import files
from common.config import parse_config
from common.networks import build_network
from learner import checkpoint, export
from tests.test_launch import RUN_FLAGS

KIB = 1024


@contextlib.contextmanager
def tiny_disk(folder, size_kib: int):
    """A tmpfs of size_kib mounted at folder for the block; skips the test where mounting is not
    allowed (not root, or a container without CAP_SYS_ADMIN)."""
    folder.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command here")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def resize(folder, size_kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(folder)], check=True)


def leftovers(folder) -> list:
    """Temp files and the reserve: what a run must never leave behind once it has ended."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(files.TMP_SUFFIX) or p.name == files.RESERVE_NAME
    )


# test_launch's short in-process run, a checkpoint every round, and all of them kept: they fill the disk
RUN = [*RUN_FLAGS, "--keep-checkpoints", "100", "--run-name", "run"]


def test_a_run_that_fills_its_disk_ends_in_one_line_and_a_summary_and_resumes(tmp_path, capsys):
    """1,500 KiB hold config.json, the logs and two checkpoints (320 and 630 KiB) but not the
    third: the run stops as that write fails."""
    with tiny_disk(tmp_path / "disk", 1500) as disk:
        flags = [*RUN, "--run-root", str(disk), "--max-env-steps", "20000"]
        assert launch.main(flags) == 1
        out, err = capsys.readouterr()
        run_dir = disk / "run"
        lines = err.splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        stored = checkpoint.list_checkpoints(run_dir / "checkpoints")
        newest = checkpoint.step_of(stored[0])
        assert lines[0].startswith(
            f"launch.py: error: no space left in {run_dir / 'checkpoints'} for ckpt-"
        ), lines[0]
        assert " (No space left on device): it needs " in lines[0]
        assert lines[0].endswith(
            f" free; free space, then --resume {run_dir} (summary.json in {run_dir})"
        )
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["stop_reason"] == "disk full" and summary["checkpoint"] == str(stored[0])
        assert summary["error"] in lines[0]
        # nothing half-written: no temp file, no policy, every checkpoint whole
        assert leftovers(run_dir) == [] and not (run_dir / "policy.pt2").exists()
        for path in stored:
            checkpoint.read_checked(path)  # CRCs and torch.load(weights_only=True)
        assert len(stored) >= 2

        resize(disk, 8 * KIB)  # room again: the run goes on from its newest checkpoint
        more = ["--resume", str(run_dir), "--max-env-steps", str(summary["env_steps"] + 1024)]
        assert launch.main([*more, "--keep-checkpoints", "2"]) == 0
        resumed = json.loads((run_dir / "summary.json").read_text())
        assert resumed["resumed_from"] == str(run_dir / "checkpoints" / f"ckpt-{newest}.pt")
        assert resumed["learner_steps"] > newest and leftovers(run_dir) == []
        assert torch.export.load(str(run_dir / "policy.pt2")).module()(torch.zeros(1, 4)).shape == (
            1,
            2,
        )


def cartpole_net():
    cfg = parse_config(["--in-process"])
    return build_network(cfg.network_spec(envs_lib.describe(cfg.env))), envs_lib.describe(cfg.env)


def test_an_export_that_does_not_fit_leaves_the_old_policy_and_no_temp_file(tmp_path):
    net, info = cartpole_net()
    with tiny_disk(tmp_path / "disk", 256) as disk:
        export.export_policy(net, info, disk / "policy.pt2")
        before = (disk / "policy.pt2").read_bytes()
        # fill the disk up to 8 KiB: less than a policy
        with open(disk / "filler", "wb") as f:
            f.write(b"\1" * (files.free_bytes(disk) - 8 * KIB))
        free = files.free_bytes(disk)
        with pytest.raises(files.DiskFull) as failed:
            export.export_policy(net, info, disk / "policy.pt2")
        assert str(failed.value) == (
            f"no space left in {disk} for policy.pt2 (No space left on device): it needs "
            f"{files.size(len(before))}, 8.0 KiB free"
        )
        assert (disk / "policy.pt2").read_bytes() == before
        assert leftovers(disk) == [] and files.free_bytes(disk) == free


def test_a_disk_too_full_for_the_first_write_is_one_line_exit_2_and_frees_the_name(
    tmp_path, capsys
):
    """Not even the space kept for summary.json fits: refused as a --run-root without room, the
    folder just claimed removed again, so the name is not blocked."""
    with tiny_disk(tmp_path / "disk", 32) as disk:
        assert launch.main([*RUN, "--run-root", str(disk)]) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [
            f"launch.py: error: --run-root='{disk}' is invalid: no space left in {disk / 'run'} "
            f"for the space kept for summary.json (No space left on device): it needs 64.0 KiB, "
            "32.0 KiB free; allowed: a folder with free space"
        ]
        assert list(disk.iterdir()) == []


def test_log_lines_refused_by_a_full_disk_are_one_line_naming_the_run_folder(
    tmp_path, capsys, monkeypatch
):
    """metrics.jsonl and TensorBoard write a line at a time (their size is unknown): the line
    names the run folder and a checkpoint's size as what going on needs."""
    from driver.metrics import RunLogger

    scalars, calls = RunLogger.scalars, []

    def scalars_until_the_disk_is_full(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return scalars(self, *args, **kwargs)

    monkeypatch.setattr(RunLogger, "scalars", scalars_until_the_disk_is_full)
    flags = [*RUN, "--checkpoint-every-s", "1000", "--max-env-steps", "20000"]
    assert launch.main([*flags, "--run-root", str(tmp_path)]) == 1
    run_dir = tmp_path / "run"
    (line,) = capsys.readouterr().err.splitlines()
    size = files.size(checkpoint.list_checkpoints(run_dir / "checkpoints")[0].stat().st_size)
    assert line.startswith(
        f"launch.py: error: no space left in {run_dir} for its logs and next checkpoint (No space "
        f"left on device): it needs {size}, "
    ), line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "disk full" and leftovers(run_dir) == []


def fill(disk) -> None:
    """Take every free byte of disk (another process filling it, say)."""
    with open(disk / "filler", "ab", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\1" * 4096)


def test_a_disk_another_process_fills_still_gets_the_summary(tmp_path, capsys, monkeypatch):
    """The disk is filled to the last byte once the learner has trained: whichever write fails
    next, summary.json still fits, in the space the run kept for it from its start."""
    from driver.trainer import Trainer

    on_learner, calls = Trainer.on_learner, []

    def fill_after_a_few_reports(self, metrics):
        calls.append(1)
        if len(calls) == 3:
            fill(self.run_dir.parent)
        return on_learner(self, metrics)

    monkeypatch.setattr(Trainer, "on_learner", fill_after_a_few_reports)
    with tiny_disk(tmp_path / "disk", 4 * KIB) as disk:
        flags = [*RUN, "--run-root", str(disk), "--max-env-steps", "20000"]
        assert launch.main(flags) == 1
        run_dir = disk / "run"
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("launch.py: error: no space left in ") and line.endswith(
            f"; free space, then --resume {run_dir} (summary.json in {run_dir})"
        ), line
        assert files.free_bytes(disk) < 64 * KIB  # it was full
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["stop_reason"] == "disk full" and leftovers(run_dir) == []
        for path in checkpoint.list_checkpoints(run_dir / "checkpoints"):
            checkpoint.read_checked(path)


def test_a_file_size_limit_is_told_apart_from_a_full_disk(tmp_path):
    """ulimit -f (RLIMIT_FSIZE): Python ignores SIGXFSZ, so the write fails with EFBIG while the
    disk has room; the line says which limit, and nothing is left behind."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * KIB, hard))
    try:
        with pytest.raises(files.DiskFull) as failed:
            files.write_atomic(tmp_path / "ckpt-1.pt", b"\1" * (100 * KIB))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(failed.value) == (
        f"ckpt-1.pt in {tmp_path} exceeds this process's file-size limit (ulimit -f; File too "
        "large): it needs 100.0 KiB"
    )
    assert failed.value.remedy == "raise the file-size limit" and list(tmp_path.iterdir()) == []
