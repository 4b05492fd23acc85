"""One learner update, timed: milliseconds per Learner.update on one CPU thread, for several
checkouts of the code side by side in one invocation (each measurement its own process,
the checkouts alternating, so that the machine's drift hits them alike), per preset and mode.

  git worktree add /tmp/old 9ff6b78
  python -m bench.update --code new=. old=/tmp/old --presets cartpole minatar-breakout --out x.json

Modes: `eager`; `compiled`, the loss compiled through learner/compiled.py's cache (built
first, outside the timing, into --cache; checkouts without that module are skipped). Each
row: median ms per update over --repeats processes (each the median of --updates timed
updates after a warm-up), the stage split of one update (target pass, loss forward,
forward + backward) and the aten calls per update from torch.profiler. The batch is random
but shaped as replay's (the preset's batch size and sequence length, a few episode ends).
"""

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common.cli import script_parser

ROOT = Path(__file__).resolve().parents[1]


def new_learner(learner_cls, cfg, publisher):
    """A checkout's Learner without replay: given the sequence spec where its constructor takes
    one (since the wiring builds it once), else as before."""
    import inspect

    if "spec" not in inspect.signature(learner_cls).parameters:
        return learner_cls(cfg, None, publisher)
    from common.envs import describe
    from common.sequence import SequenceSpec

    return learner_cls(
        cfg, SequenceSpec.for_env(cfg.sequence_length, describe(cfg.env)), None, publisher
    )


def worker(code: str, preset: str, mode: str, updates: int) -> dict:
    """Runs in a child process with `code` first on PYTHONPATH (checkout_env): times that
    checkout's learner."""
    import numpy as np
    import torch

    from common import envs as envs_lib
    from common.config import PRESETS, Config, validate
    from common.losses import muesli_loss_tensors, target_quantities
    from learner.learner import Learner, random_start_mask

    try:
        from learner.batch import to_time_major
    except ImportError:  # a checkout from before issue 28 kept it in common/
        from common.batch import to_time_major

    torch.set_num_threads(1)
    name, _, sets = preset.partition(":")  # PRESET[:FIELD=VALUE,...]
    overrides = {
        k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in sets.split(",") if kv)
    }
    cfg = validate(
        Config(
            **{
                **PRESETS[name],
                **overrides,
                "compile": "auto" if mode == "compiled" else "off",
                "device": "cpu",
                "torch_threads": 1,
            }
        )
    )

    class NoPublisher:
        def publish(self, version, network):
            pass

    learner = new_learner(Learner, cfg, NoPublisher())
    if mode == "compiled":
        deadline = time.monotonic() + 60
        while learner.cached_loss is not None and time.monotonic() < deadline:
            # swaps it in when loaded
            learner.update(batch_of(cfg, envs_lib.describe(cfg.env), np, to_time_major))
        if not learner.compiled:
            raise SystemExit(
                f"{code}: the compiled loss was not in the cache (--cache) or did not load"
            )
    batch = batch_of(cfg, envs_lib.describe(cfg.env), np, to_time_major)
    for _ in range(20):
        learner.update(batch)

    def median_ms(fn, n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    row = {"update_ms": median_ms(lambda: learner.update(batch), updates)}
    if mode == "eager":
        args = (
            learner.online,
            learner.target,
            dict(
                batch,
                start_mask=random_start_mask(
                    batch["mask"], cfg.starts_per_sequence, learner.generator
                ),
            )
            if cfg.starts_per_sequence
            else batch,
            learner.loss_state,
            learner.params,
        )

        def forward_backward():
            learner.online.zero_grad()
            muesli_loss_tensors(*args)[0].backward()

        n = max(updates // 2, 10)
        row.update(
            target_ms=median_ms(
                lambda: target_quantities(learner.target, args[2], args[3], args[4]), n
            ),
            loss_forward_ms=median_ms(lambda: muesli_loss_tensors(*args), n),
            forward_backward_ms=median_ms(forward_backward, n),
        )
    with torch.profiler.profile() as prof:
        for _ in range(5):
            learner.update(batch)
    row["aten_calls"] = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / 5
    return row


def batch_of(cfg, info, np, to_time_major) -> dict:
    """A random time-major batch in replay's layout; 1 in 8 sequences ends part-way (half of
    them at a true terminal)."""
    rng = np.random.default_rng(0)
    B, T, A = cfg.batch_size, cfg.sequence_length, info.num_actions
    shape = (B, T + 1, *info.obs_shape)
    obs = (
        ((rng.random(shape) < 0.1) * 255).astype(np.uint8)
        if info.obs_dtype == "uint8"
        else rng.standard_normal(shape).astype(np.float32)
    )
    behaviour = rng.random((B, T, A)).astype(np.float32)
    behaviour /= behaviour.sum(-1, keepdims=True)
    mask, terminal = np.ones((B, T), bool), np.zeros((B, T), bool)
    ends = rng.integers(1, T, B // 8)
    for b, end in enumerate(ends):
        mask[b, end + 1 :] = False
        terminal[b, end] = b % 2 == 0
    return to_time_major(
        dict(
            obs=obs,
            action=rng.integers(0, A, (B, T)),
            reward=rng.random((B, T)).astype(np.float32),
            behaviour=behaviour,
            mask=mask,
            terminal=terminal,
        )
    )


def build(code: str, preset: str) -> None:
    """Runs in a child process: build `code`'s compiled loss for `preset` into the cache (if it
    is not there), outside any timing. `code` is first on PYTHONPATH (checkout_env)."""
    from common.config import PRESETS, Config, to_dict, validate
    from learner import compiled
    from learner.learner import Learner

    class NoPublisher:
        def publish(self, version, network):
            pass

    cfg = validate(
        Config(**{**PRESETS[preset], "compile": "off", "device": "cpu", "torch_threads": 1})
    )
    folder = new_learner(Learner, cfg, NoPublisher()).compiled_folder()
    if not (folder / "loss.bin").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        compiled.build(
            to_dict(cfg), folder.parent / f".staging-{folder.name}-{os.getpid()}", folder
        )


def checkout_env(env: dict, code: str) -> dict:
    """The environment of a child that measures the checkout at `code`: that folder first on
    PYTHONPATH, so its common/ and learner/ are the ones imported. The child runs this file by
    its path, which puts bench/ (no project package in it) first on sys.path, not this
    checkout's root."""
    paths = [str(Path(code).resolve()), env.get("PYTHONPATH", "")]
    return dict(env, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--code", nargs="+", default=["new=."], help="NAME=FOLDER checkouts to compare"
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["cartpole"],
        help="PRESET or PRESET:FIELD=VALUE,... (e.g. minatar-breakout:starts_per_sequence=3)",
    )
    parser.add_argument(
        "--modes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="processes per (code, preset, mode)")
    parser.add_argument("--updates", type=int, default=200, help="timed updates per process")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/muesli-ray-bench-cache"),
        help="compiled-loss cache of the compiled rows (MUESLI_RAY_CACHE)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument(
        "--worker", nargs=4, metavar=("CODE", "PRESET", "MODE", "UPDATES"), help=argparse.SUPPRESS
    )
    parser.add_argument("--build", nargs=2, metavar=("CODE", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(*args.build)
        return 0
    if args.worker:
        code, preset, mode, updates = args.worker
        print(json.dumps(worker(code, preset, mode, int(updates))))
        return 0
    from bench.host import describe

    codes = dict(item.split("=", 1) for item in args.code)
    env = dict(os.environ, MUESLI_RAY_CACHE=str(args.cache), OMP_NUM_THREADS="1")
    plan = [
        (name, preset, mode)
        for preset in args.presets
        for mode in args.modes
        for name in codes
        if mode == "eager" or (Path(codes[name]) / "learner" / "compiled.py").exists()
    ]
    for name, preset, mode in plan:
        if mode == "compiled":
            subprocess.run(
                [sys.executable, __file__, "--build", str(Path(codes[name]).resolve()), preset],
                env=checkout_env(env, codes[name]),
                check=True,
            )
    results = {key: [] for key in plan}
    for repeat in range(args.repeats):
        for key in plan:
            name, preset, mode = key
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(Path(codes[name]).resolve()),
                    preset,
                    mode,
                    str(args.updates),
                ],
                env=checkout_env(env, codes[name]),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[key].append(json.loads(out.strip().splitlines()[-1]))
            print(
                f"  repeat {repeat + 1}/{args.repeats} {name:<6} {preset:<18} {mode:<9} "
                f"{results[key][-1]['update_ms']:7.2f} ms  (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    rows = []
    for (name, preset, mode), runs in results.items():
        row = {"code": name, "folder": codes[name], "preset": preset, "mode": mode, "runs": runs}
        for field in runs[0]:
            row[field] = statistics.median(r[field] for r in runs)
        rows.append(row)
    print(
        f"\n{'code':<6} {'preset':<18} {'mode':<9} {'ms/update':>10} {'updates/s':>10} {'target':>7} "
        f"{'fwd':>6} {'fwd+bwd':>8} {'aten calls':>11}"
    )
    for row in rows:
        stages = "".join(
            f" {row[k]:>{w}.2f}" if k in row else " " * (w + 1)
            for k, w in (("target_ms", 7), ("loss_forward_ms", 6), ("forward_backward_ms", 8))
        )
        print(
            f"{row['code']:<6} {row['preset']:<18} {row['mode']:<9} {row['update_ms']:>10.2f} "
            f"{1e3 / row['update_ms']:>10.1f}{stages} {row['aten_calls']:>11,.0f}"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "machine": describe(("torch", "numpy")),
                    "argv": sys.argv[1:],
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "rows": rows,
                },
                indent=1,
            )
        )
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
