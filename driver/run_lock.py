"""One live run per folder. The run's process holds an exclusive flock on RUN_DIR/.lock (which
names its pid) from the claim of the folder to its end; the kernel drops the lock when the process
ends, however it ends (SIGKILL included), so a killed run's folder can be resumed at once while
`--resume` of a running one is refused."""

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # run folder -> the open descriptor that holds its lock


class RunInUse(Exception):
    def __init__(self, run_dir: Path, pid: int | None):
        self.run_dir, self.pid = run_dir, pid
        by = f"the run of pid {pid}" if pid else "another run"
        super().__init__(f"{run_dir} is in use by {by}, still running")


def holder(run_dir: Path) -> int | None:
    """The pid of the live run that holds run_dir's lock (0 if it named none yet), or None when
    no other process holds it."""
    path = Path(run_dir) / LOCK_NAME
    if path.resolve().parent in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)  # drops this descriptor's lock, if it got it; never another's
    return None


def hold(run_dir: Path) -> None:
    """Take run_dir's lock for this process (again: a no-op); RunInUse if a live run has it."""
    folder = Path(run_dir).resolve()
    if folder in _held:
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunInUse(folder, holder(folder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[folder] = fd


def release(run_dir: Path) -> None:
    """Give run_dir's lock back (the run has ended); nothing if this process does not hold it."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
