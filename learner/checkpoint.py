"""Checkpoint files: atomic writes, the newest N kept, fallback past corrupt files.

A checkpoint is the bytes of `Learner.checkpoint_bytes()` (torch.save format) written as
run_dir/checkpoints/ckpt-<step>.pt, <step> being the learner step stored inside. Writes
go through common/files.write_atomic (a temporary file, fsynced, then renamed, removed when
the write fails), so a crash or a full disk never leaves a half-written checkpoint under the
final name; an existing file is never replaced.
"""

import io
import os
import re
import zipfile
from pathlib import Path

import torch

# the run's one atomic write (common/files.py), used here and by bench/ablate.py
from common.files import write_atomic

PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read."""


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in folder, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(step_of(p), p) for p in folder.iterdir() if PATTERN.match(p.name)]
    return [p for _, p in sorted(found, reverse=True)]


def step_of(path: Path) -> int:
    return int(PATTERN.match(Path(path).name).group(1))


def save(folder: Path, step: int, data: bytes, keep: int) -> Path | None:
    """Write ckpt-<step>.pt and delete all but the newest `keep`. An existing checkpoint is
    never replaced (returns None): one of the same learner step holds the same learner state,
    and it may be the one a resumed run started from."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt-{step}.pt"
    if path.exists():
        return None
    write_atomic(path, data)
    for old in list_checkpoints(folder)[keep:]:
        old.unlink()
    return path


def check_zip(data: bytes) -> None:
    """Raise zipfile.BadZipFile unless data is a zip archive whose members all match their CRCs.
    torch.load and torch.export.load do not check them: a flipped bit in a tensor would load silently."""
    bad = zipfile.ZipFile(io.BytesIO(data)).testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"CRC mismatch in {bad}")


def contents(data: bytes) -> dict:
    """The state stored by Learner.checkpoint_bytes (loaded with weights_only=True, to the CPU)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to <name>.corrupt: kept for inspection, no longer listed,
    so it neither counts towards --keep-checkpoints nor blocks a new checkpoint of its step."""
    target = Path(path).with_name(Path(path).name + ".corrupt")
    os.replace(path, target)
    return target


def read_checked(path: Path) -> bytes:
    """The file's bytes, after checking its zip CRCs and that torch can load them with weights_only=True."""
    data = Path(path).read_bytes()
    try:
        # torch.load does not check the zip CRCs: a flipped bit would load silently
        check_zip(data)
        contents(data)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})"
        ) from None
    return data


def load_newest(folder: Path) -> tuple[Path | None, bytes | None, list[str]]:
    """(path, bytes) of the newest readable checkpoint and the errors met on newer ones."""
    errors = []
    for path in list_checkpoints(folder):
        try:
            return path, read_checked(path), errors
        except CheckpointError as exc:
            errors.append(str(exc))
    return None, None, errors
