"""Start-up checks that look at this machine, the network or a run directory.

launch.py runs them after the config is validated and before Ray starts or anything is
written, so bad input costs seconds and leaves nothing behind. Each raises ConfigError
(or CheckpointError) with one line naming the flag, the value and what is allowed.
"""

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import Config, ConfigError
from common.envs import EnvInfo, derive_seed
from common.networks import build_network
from common.sequence import SequenceSpec
from common.vector_env import VectorEnv
from driver import placement, run_lock
from learner import checkpoint
from learner.learner import check_same_shapes

ADDRESS_PROBE_S = 2.0  # a Ray head's GCS port answers a TCP connect at once
# replay may take this share of the memory available; the rest is the run's
REPLAY_MEMORY_SHARE = 0.8


def check_run_root(cfg: Config) -> None:
    """A new run's folder must not exist yet (or be an empty folder), and its nearest existing
    ancestor must be a folder this process can create folders in (run root a file, read-only,
    or where nothing can be created, such as /proc: refused)."""
    if cfg.resume:
        return
    target = Path(cfg.run_root) / cfg.run_name if cfg.run_name else None
    if target is not None and (
        target.is_symlink()
        or target.exists()
        and not (target.is_dir() and not any(target.iterdir()))
    ):
        holder = run_lock.holder(target) if target.is_dir() else None
        if holder is not None:
            raise ConfigError(
                f"--run-name={cfg.run_name!r} is invalid: {run_lock.RunInUse(target, holder)}; "
                "allowed: a new name"
            )
        if target.is_dir() and not checkpoint.list_checkpoints(target / "checkpoints"):
            raise ConfigError(
                f"--run-name={cfg.run_name!r} is invalid: {target} already exists and holds no "
                f"checkpoint to resume from; allowed: a new name, or delete {target} (if no run "
                "is using it) and start again"
            )
        raise ConfigError(
            f"--run-name={cfg.run_name!r} is invalid: {target} already exists and is not an empty "
            f"folder; allowed: a new name, or --resume {target} to continue that run"
        )
    root = Path(cfg.run_root)
    existing = next(p for p in (root, *root.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"--run-root={cfg.run_root!r} is invalid: {existing} is a file; allowed: a folder "
            "(existing or creatable)"
        )
    try:  # os.access says yes to root on a read-only folder: try it, leaving nothing behind
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as exc:
        raise ConfigError(
            f"--run-root={cfg.run_root!r} is invalid: cannot create folders in {existing} "
            f"({exc.strerror or type(exc).__name__}); allowed: a folder this user can write to"
        ) from None


def check_device(cfg: Config) -> None:
    """--device cuda needs a CUDA device here; a cluster's GPUs are checked after joining it
    (driver/placement.py)."""
    if cfg.device == "cuda" and cfg.address is None and not torch.cuda.is_available():
        raise ConfigError(
            "--device='cuda' is invalid: torch sees no CUDA device on this machine; "
            "allowed here: auto, cpu"
        )


def replay_bytes(cfg: Config, info: EnvInfo) -> int:
    """Bytes the replay shards allocate: replay_capacity sequences of the layout in
    common/sequence.py (obs [T+1, *O] plus per-step action, reward, behaviour, flags, version)."""
    spec = SequenceSpec.for_env(cfg.sequence_length, info)
    per_sequence = sum(
        np.dtype(dtype).itemsize * int(np.prod(shape)) for dtype, shape in spec.fields().values()
    )
    return cfg.replay_capacity * per_sequence


def available_memory() -> int:
    """Bytes of memory this machine can give without swapping (MemAvailable of /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_replay_memory(cfg: Config, info: EnvInfo, available: int, where: str) -> None:
    need = replay_bytes(cfg, info)
    if need > REPLAY_MEMORY_SHARE * available:
        raise ConfigError(
            f"--replay-capacity={cfg.replay_capacity} is invalid: its {cfg.replay_capacity:,} "
            f"sequences of {need / cfg.replay_capacity:,.0f} bytes need {need / 2**30:,.1f} GiB; "
            f"allowed: at most {REPLAY_MEMORY_SHARE:.0%} of the {available / 2**30:,.1f} GiB "
            f"available on {where}"
        )


def probe_address(address: str, timeout_s: float = ADDRESS_PROBE_S) -> None:
    """--address HOST:PORT must accept a TCP connection (the head's GCS port) within
    timeout_s; 'auto' is left to ray.init, which fails at once when no cluster runs here."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--address={address!r} is invalid: allowed: 'auto' or HOST:PORT of a Ray head "
            "(its GCS port, 6379 by default)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = (
            type(exc).__name__
            if isinstance(exc, TimeoutError)
            else exc.strerror or type(exc).__name__
        )
        raise ConfigError(
            f"--address={address!r} is invalid: nothing accepts connections at {host}:{port} "
            f"within {timeout_s:g} s ({reason}); allowed: 'auto' or HOST:PORT of a running Ray "
            "head (its GCS port, 6379 by default)"
        ) from None


def check_local_ray(cfg: Config) -> None:
    """A local Ray's settings that would hang it or its start: more actors than its --num-cpus
    can hold (they would wait for CPUs forever), a metrics port another process holds (ray.init
    would time out after 30 s)."""
    try:
        placement.plan(cfg, cfg.num_cpus, cfg.num_cpus, free_gpus=0)
    except placement.PlacementError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.metrics_export_port:
        check_port_free(cfg.metrics_export_port)


def check_port_free(port: int) -> None:
    """--metrics-export-port must be free on every interface of this machine, as Ray binds it."""
    with socket.socket() as probe:
        # SO_REUSEADDR: a port left in TIME_WAIT by an earlier run is free for Ray too
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            raise ConfigError(
                f"--metrics-export-port={port} is invalid: another process holds port {port} "
                f"on this machine ({exc.strerror or type(exc).__name__}); allowed: a free port, "
                "or 0 (Ray's default)"
            ) from None


@dataclass
class ResumePoint:
    """The checkpoint a --resume run continues from, read and checked before anything starts."""

    path: Path
    data: bytes  # Learner.checkpoint_bytes()
    # the driver's counters stored with it (env_steps, episodes, seconds, ...)
    run_state: dict
    newer: list[Path] = field(default_factory=list)  # unreadable checkpoints of later steps
    errors: list[str] = field(default_factory=list)  # one line for each

    @property
    def env_steps(self) -> int:
        return int(self.run_state.get("env_steps", 0))


def resume_in_use(cfg: Config, why: run_lock.RunInUse) -> ConfigError:
    """The one line for --resume of a folder a live run holds: here, or in make_run_dir when two
    resumes of one folder start at once."""
    return ConfigError(
        f"--resume={cfg.resume!r} is invalid: {why}; allowed: --resume once that run has ended "
        "(Ctrl-C finishes it)"
    )


def check_resume(cfg: Config, info: EnvInfo) -> ResumePoint | None:
    """For --resume: the newest readable checkpoint, which must fit the network these flags
    build (a --width changed on resume is refused here, before config.json is rewritten)."""
    if not cfg.resume:
        return None
    holder = run_lock.holder(cfg.resume)
    if holder is not None:
        raise resume_in_use(cfg, run_lock.RunInUse(Path(cfg.resume), holder))
    folder = Path(cfg.resume) / "checkpoints"
    path, data, errors = checkpoint.load_newest(folder)
    if data is None:
        raise checkpoint.CheckpointError(
            f"--resume={cfg.resume!r}: no readable checkpoint in {folder}; allowed: a run "
            f"folder with one, or delete {cfg.resume} (if no run is using it) and "
            "start that run again"
        )
    state = checkpoint.contents(data)
    net = build_network(cfg.network_spec(info))
    try:
        check_same_shapes(net.state_dict(), state["online"], "online")
    except ValueError as exc:
        raise ConfigError(f"--resume={cfg.resume!r} with these flags is invalid: {exc}") from None
    newer = [
        p
        for p in checkpoint.list_checkpoints(folder)
        if checkpoint.step_of(p) > checkpoint.step_of(path)
    ]
    return ResumePoint(path, data, dict(state.get("run", {})), newer, errors)


def check(cfg: Config, info: EnvInfo) -> ResumePoint | None:
    """Every start-up check that needs neither Ray nor a run directory; the resume point if any."""
    check_run_root(cfg)
    check_device(cfg)
    if cfg.address is None:  # replay lives on this machine (in-process or a local Ray)
        check_replay_memory(cfg, info, available_memory(), "this machine")
        if not cfg.in_process:
            check_local_ray(cfg)
    else:
        probe_address(cfg.address)
    return check_resume(cfg, info)


def check_env_starts(cfg: Config) -> None:
    """Build and reset one env as the actors will (retrying as they do), so an env that cannot
    start is reported before Ray starts or a run directory is made: EnvFailure."""
    envs = VectorEnv(cfg.env, 1, owner="start-up check")
    try:
        envs.reset(seed=derive_seed(cfg.seed, "check"))
    finally:
        envs.close()
