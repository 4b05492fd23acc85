"""The compiled Muesli loss on CPU without a stall: built once per machine and config by a
background process, loaded by later runs while they keep learning eagerly.

  key    = sha256 of (torch and Python versions, the loss's source files, network spec, loss
           params, batch layout, device, precision)
  folder = cache_root() / "compiled" / key:  loss.bin (torch.compile's aot_compile of
           common/losses.muesli_loss_tensors, forward and backward) and inductor/ (its kernels)

A learner whose key is cached copies the folder's kernels to a private temporary folder and
loads the function in a thread (a few seconds, learning eagerly meanwhile), then swaps it in.
One whose key is not cached learns eagerly, and when the run ends launch.py starts
`python -m learner.compiled` at nice 19 in a session of its own: it builds into a staging folder
that is renamed into place only when complete, so a build cut short (killed, full disk) leaves
nothing a later run reads. A run never waits for a compile.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# What the compiled graph is traced from: a change to any of them is a new key.
SOURCES = (
    "common/losses.py",
    "common/networks.py",
    "common/cmpo.py",
    "common/value_transforms.py",
    "common/retrace.py",
    "learner/batch.py",
    "learner/learner.py",
    "learner/compiled.py",
)
# the cache folder; 'off' disables the cache (and background builds)
CACHE_ENV = "MUESLI_RAY_CACHE"
# a lock still without its builder's pid after this is a dead run's
STALE_S = 60.0


def cache_root() -> Path | None:
    """$MUESLI_RAY_CACHE, else $XDG_CACHE_HOME/muesli-ray, else ~/.cache/muesli-ray; None when
    $MUESLI_RAY_CACHE is 'off'."""
    value = os.environ.get(CACHE_ENV)
    if value == "off":
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "muesli-ray"


def folder_for(
    spec, params, length: int, batch_size: int, obs_dtype: str, device: str, bf16: bool
) -> Path | None:
    """Where the compiled loss of this learner setup is cached; None with the cache off."""
    root = cache_root()
    if root is None:
        return None
    return root / "compiled" / cache_key(spec, params, length, batch_size, obs_dtype, device, bf16)


def build_after_run(cfg, info) -> Path | None:
    """At the end of a local run with --compile auto and a CPU learner: start the build of its
    compiled loss for later runs if the cache lacks it (not during the run, whose cores it would
    share: a first Ray run was ~15% slower per env step with the build beside it). Returns the
    folder being built, or None."""
    from common.config import to_dict
    from learner.learner import resolve_device, use_bf16

    device = resolve_device(cfg.device)
    if cfg.compile != "auto" or cfg.address or device.type != "cpu":
        return None
    folder = folder_for(
        cfg.network_spec(info),
        cfg.loss_params(),
        cfg.sequence_length,
        cfg.batch_size,
        info.obs_dtype,
        str(device),
        use_bf16(cfg.precision, device),
    )
    if folder is None or (folder / "loss.bin").exists():
        return None
    return folder if start_build(folder.parent, folder.name, to_dict(cfg)) else None


def cache_key(
    spec, params, length: int, batch_size: int, obs_dtype: str, device: str, bf16: bool
) -> str:
    """Hex digest naming one compiled loss: everything its graph and guards depend on."""
    import torch

    sources = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in SOURCES)).hexdigest()
    text = json.dumps(
        {
            "torch": torch.__version__,
            "python": list(sys.version_info[:2]),
            "sources": sources,
            "spec": asdict(spec),
            "params": asdict(params),
            "T": length,
            "B": batch_size,
            "obs_dtype": obs_dtype,
            "device": device,
            "bf16": bf16,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def synthetic_arrays(seq_spec, batch_size: int, seed: int = 0) -> dict:
    """A replay batch's arrays (dtypes, shapes and layout of replay/client.py's batches) with
    random contents: what the loss is traced with."""
    rng = np.random.default_rng(seed)
    arrays = seq_spec.empty((batch_size,))
    arrays["obs"][...] = rng.random(arrays["obs"].shape) * (
        255 if arrays["obs"].dtype == np.uint8 else 1
    )
    arrays["action"][...] = rng.integers(0, seq_spec.num_actions, arrays["action"].shape)
    arrays["reward"][...] = rng.standard_normal(arrays["reward"].shape)
    arrays["behaviour"][...] = 1.0 / seq_spec.num_actions
    arrays["mask"][...] = True
    return arrays


class CachedLoss:
    """Loads a built folder's loss in a thread; `take()` gives it once it is loaded (None before,
    and for good if loading failed, with one line saying why)."""

    def __init__(self, folder: Path):
        self.folder, self.fn, self.error = folder, None, None
        self.seconds = None
        self._thread = threading.Thread(target=self._load, name="compiled-loss-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            import torch

            from common import losses

            # A private copy of the kernels: nothing this process writes can touch the shared cache.
            private = Path(tempfile.mkdtemp(prefix="muesli-ray-inductor-"))
            shutil.copytree(self.folder / "inductor", private / "inductor")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(private / "inductor")
            with open(self.folder / "loss.bin", "rb") as f:
                self.fn = torch.compiler.load_compiled_function(
                    f, f_globals=losses.muesli_loss_tensors.__globals__
                )
        except Exception as exc:  # any failure means: stay eager
            self.error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        self.seconds = time.perf_counter() - start

    def done(self) -> bool:
        return not self._thread.is_alive()

    def take(self) -> Callable | None:
        if not self.done():
            return None
        if self.error:
            print(
                f"learner: the compiled loss in {self.folder} did not load ({self.error}); learning eagerly"
            )
        return self.fn


def start_build(cache: Path, key: str, config: dict) -> subprocess.Popen | None:
    """Start `python -m learner.compiled` at nice 19 to build `key` from `config` (a Config as a
    dict), unless a live build of it holds its lock. Returns the process (None if not started)."""
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(".staging-*"):  # dead builds' leftovers
        if not _pid_alive(int(old.name.rsplit("-", 1)[1])):
            shutil.rmtree(old, ignore_errors=True)
    lock = cache / f"{key}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if _alive(lock):
            return None  # another run is building it
        lock.unlink(missing_ok=True)  # its builder died (killed, say): build again
        return start_build(cache, key, config)
    process = subprocess.Popen(
        [sys.executable, "-m", "learner.compiled", str(cache / key)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # outlives the run
        start_new_session=True,
        preexec_fn=lambda: os.nice(19),
    )
    with os.fdopen(fd, "w") as f:
        f.write(str(process.pid))
    with process.stdin:
        process.stdin.write(json.dumps(config).encode())
    return process


def _alive(lock: Path) -> bool:
    """Whether the builder whose pid a lock file holds is still running (a lock without a pid
    yet is taken as alive unless it is old)."""
    try:
        text = lock.read_text().strip()
    except FileNotFoundError:
        return False
    if not text:
        return time.time() - lock.stat().st_mtime < STALE_S
    return _pid_alive(int(text))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def build(config: dict, staging: Path, folder: Path) -> None:
    """Trace and compile the loss for `config` as a learner would call it, check it against the
    eager loss, save it into `staging`, and rename that to `folder`."""
    staging.mkdir(parents=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(staging / "inductor")
    import torch

    from common.config import Config
    from common.envs import describe
    from common.losses import muesli_loss_tensors
    from common.sequence import SequenceSpec
    from learner.batch import to_time_major
    from learner.learner import Learner

    class _NoPublisher:
        def publish(self, version, network):
            pass

    cfg = Config(**{**config, "compile": "off"})
    spec = SequenceSpec.for_env(cfg.sequence_length, describe(cfg.env))
    learner = Learner(cfg, spec, None, _NoPublisher())
    args = learner.loss_args(
        to_time_major(
            synthetic_arrays(learner.sequence_spec, learner.cfg.batch_size), learner.device
        )
    )
    with learner.autocast():
        compiled = torch.compile(muesli_loss_tensors, fullgraph=True, dynamic=False).aot_compile(
            (args, {})
        )
        got, want = compiled(*args)[0], muesli_loss_tensors(*args)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    compiled.save_compiled_function(str(staging / "loss.bin"))
    # atomic: the folder appears complete or not at all
    os.rename(staging, folder)


def main(argv) -> int:
    """python -m learner.compiled FOLDER, the config as JSON on stdin."""
    folder = Path(argv[0])
    staging = folder.parent / f".staging-{folder.name}-{os.getpid()}"
    try:
        build(json.loads(sys.stdin.read()), staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed build, or one that lost the race
        (folder.parent / f"{folder.name}.lock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
