"""Files of a run folder written whole or not at all, and a full disk told in one line.

Every file a run writes in one go (config.json, checkpoints, policy.pt2, learning_curve.png,
summary.json, a trimmed metrics.jsonl) goes through `write_atomic`: a temporary file in the
same folder, fsynced, then renamed, so a reader never sees a half-written file under its final
name, and the temporary file is removed when the write fails (on a full disk it would hold
the last free space). A write that fails because the disk is full raises DiskFull, whose text
is one line naming the folder, the space the write needed and the space left.

`reserve` holds a little space in the run folder from its start, which `release` gives back
just before summary.json is written: so a run that filled its disk can still say why it stopped.
"""

import errno
import os
import shutil
from pathlib import Path

# ENOSPC: no space left; EDQUOT: the user's quota spent; EFBIG: a file-size limit (ulimit -f)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# what summary.json needs (a few KB) with room to spare: a page-granular filesystem rounds up
RESERVE_BYTES = 64 * 1024
TMP_SUFFIX = ".tmp"


class DiskFull(OSError):
    """A write that failed for want of space; str() is one line naming the folder, what was
    written, the space it needed (when known) and the space left."""

    def __init__(self, folder: Path, what: str, needed: int | None, cause: OSError):
        self.folder, self.what, self.needed, self.cause = Path(folder), what, needed, cause
        self.free = free_bytes(folder)  # as the write failed (its temp file removed)
        super().__init__(cause.errno, str(self))

    def __str__(self) -> str:
        need = f"needs {size(self.needed)}" if self.needed else "needs more"
        if self.cause.errno == errno.EFBIG:  # the disk has room; this process may not use it
            return (
                f"{self.what} in {self.folder} exceeds this process's file-size limit (ulimit -f; "
                f"{os.strerror(self.cause.errno)}): it {need}"
            )
        return (
            f"no space left in {self.folder} for {self.what} ({os.strerror(self.cause.errno)}): "
            f"it {need}, {size(self.free)} free"
        )

    @property
    def remedy(self) -> str:
        """What the user does before --resume."""
        return "raise the file-size limit" if self.cause.errno == errno.EFBIG else "free space"


def full_cause(exc: BaseException | None) -> OSError | None:
    """The write refused for want of space that exc is, or was raised from; None if none is."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def size(n: int) -> str:
    """Bytes in the unit a person reads: '640.1 KiB', '3.2 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int:
    """Bytes free to this user in folder's filesystem (0 when it cannot be asked)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def temp_path(path: Path) -> Path:
    """Where path is written before the rename: <name>.tmp in the same folder."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to path whole or not at all (temp file, fsync, rename, fsync of the folder);
    the temp file is removed when any step fails; DiskFull for want of space."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # a failed write leaves nothing: not even the temp file's share of a full disk
        tmp.unlink(missing_ok=True)
        if full_cause(exc):
            raise DiskFull(path.parent, path.name, len(data), full_cause(exc)) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


RESERVE_NAME = ".space-for-summary"


def reserve(folder: Path) -> None:
    """Hold RESERVE_BYTES in a hidden file of folder until `release`: written, not truncated to
    size (a sparse file holds no space). DiskFull when even that does not fit."""
    path = Path(folder) / RESERVE_NAME
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if full_cause(exc):
            raise DiskFull(
                path.parent, "the space kept for summary.json", RESERVE_BYTES, full_cause(exc)
            ) from None
        raise


def release(folder: Path) -> None:
    """Give the space `reserve` held back (just before summary.json is written)."""
    (Path(folder) / RESERVE_NAME).unlink(missing_ok=True)
