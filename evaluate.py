"""Evaluate and watch a trained run: `python evaluate.py RUN_DIR [--episodes N] [--greedy | --sampled]
[--checkpoint STEP_OR_PATH] [--video N] [--seed-set S]`.

Plays the run's exported policy (RUN_DIR/policy.pt2) or one of its learner checkpoints on
env seeds the run never used (role 'watch' of common/envs.derive_seed, distinct from the
actors', the driver's evaluations' and bench/solve.py --check-policy's), with the env built
as training built it (config.json: same id, same wrappers; Atari with the paper's
preprocessing). Prints a line per finished batch of episodes and a final table of the mean,
std, min and max return. --video N writes MP4s of the first N episodes into RUN_DIR/videos/
(raw rendered frames, e.g. Atari's colour screen rather than the 84x84 stack the agent sees;
needs pip install -r requirements-video.txt).

Bad input (no such run, no policy, a policy of another env, a checkpoint that is missing or
corrupt, a missing env or video package, a bad flag) prints one line and exits with code 2.
"""

import argparse
import io
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from actors.evaluation import Episodes, num_eval_envs, play
from actors.video import EpisodeVideo, missing_video_packages
from common import envs as envs_lib
from common.cli import OneLineParser, UsageError, exit_usage, first_paragraph
from common.config import Config, ConfigError, saved_config
from common.networks import build_network
from learner import checkpoint
from learner.learner import acting_network_name, check_same_shapes

POLICY_FILE = "policy.pt2"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="evaluate.py", description=first_paragraph(__doc__))
    parser.add_argument(
        "run_dir", type=Path, help="a run directory written by launch.py (runs/<name>)"
    )
    parser.add_argument("--episodes", type=int, default=100, help="episodes to play (default 100)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy",
        dest="greedy",
        action="store_true",
        default=True,
        help="argmax actions (the default, as the run's own evaluations)",
    )
    mode.add_argument(
        "--sampled", dest="greedy", action="store_false", help="actions sampled from the policy"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="STEP_OR_PATH",
        help="play a learner checkpoint instead of policy.pt2: a step (checkpoints/ckpt-STEP.pt) or a path",
    )
    parser.add_argument(
        "--video",
        type=int,
        default=0,
        metavar="N",
        help="write MP4 videos of the first N episodes to RUN_DIR/videos/ (N <= min(episodes, 50))",
    )
    parser.add_argument(
        "--seed-set",
        type=int,
        default=0,
        help="which set of env seeds the run never used, 0, 1, ...; the same set plays the same "
        "episodes again (default 0)",
    )
    return parser


def load_config(run_dir: Path) -> Config:
    try:
        return Config(**saved_config(str(run_dir), flag="run_dir"))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """A step number names RUN_DIR/checkpoints/ckpt-STEP.pt; anything else is a path."""
    path = run_dir / "checkpoints" / f"ckpt-{which}.pt" if which.isdigit() else Path(which)
    if not path.is_file():
        steps = [p.name for p in checkpoint.list_checkpoints(run_dir / "checkpoints")]
        raise UsageError(
            f"--checkpoint={which!r} is invalid: no file {path}; allowed: a step or path of "
            f"{', '.join(steps) if steps else 'a checkpoint (this run has none)'}"
        )
    return path


def checkpoint_policy(cfg: Config, info: envs_lib.EnvInfo, path: Path) -> Callable:
    """The acting network stored in a learner checkpoint (loaded with weights_only=True)."""
    try:
        state = checkpoint.contents(checkpoint.read_checked(path))
        name = acting_network_name(cfg)
        net = build_network(cfg.network_spec(info)).eval()
        check_same_shapes(net.state_dict(), state[name], name)
    except (checkpoint.CheckpointError, ValueError, KeyError) as exc:
        raise UsageError(f"--checkpoint={str(path)!r} is invalid: {exc}") from None
    net.load_state_dict(state[name])
    return net.policy_logits


def program_shapes(program: torch.export.ExportedProgram) -> tuple[tuple, torch.dtype, int]:
    """(observation shape without the batch, its dtype, action count) an exported policy takes
    and gives, from its graph: what a run on another env cannot feed it."""
    (name,) = program.graph_signature.user_inputs
    nodes = {node.name: node for node in program.graph.nodes}
    obs = nodes[name].meta["val"]
    (logits,) = next(n for n in program.graph.nodes if n.op == "output").args[0]
    return tuple(obs.shape[1:]), obs.dtype, int(logits.meta["val"].shape[-1])


def check_fits(program, info: envs_lib.EnvInfo, env_id: str, path: Path) -> None:
    """UsageError unless the program takes the env's observations and gives its actions (a
    policy.pt2 copied from a run on another env fails only inside torch, with a long traceback)."""
    shape, dtype, actions = program_shapes(program)
    env_dtype = getattr(torch, info.obs_dtype)
    if (shape, dtype, actions) != (tuple(info.obs_shape), env_dtype, info.num_actions):
        raise UsageError(
            f"{path} does not fit {env_id}: it takes observations {shape} {str(dtype)[6:]} and gives "
            f"{actions} actions, the env has {tuple(info.obs_shape)} {info.obs_dtype} and "
            f"{info.num_actions}; allowed: the policy.pt2 of a run on {env_id}"
        )


def exported_policy(run_dir: Path, info: envs_lib.EnvInfo, env_id: str) -> Callable:
    """RUN_DIR/policy.pt2: obs [B, *O] -> logits [B, A] (torch.export program), which must fit
    the run's env."""
    path = run_dir / POLICY_FILE
    if not path.is_file():
        raise UsageError(
            f"run_dir={str(run_dir)!r} has no {POLICY_FILE} (a run writes it when it ends); "
            "allowed: a finished run, or --checkpoint STEP for one of its checkpoints"
        )
    try:
        data = path.read_bytes()
        # before torch.export.load, which logs a traceback on a bad file
        checkpoint.check_zip(data)
        program = torch.export.load(io.BytesIO(data))
    except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise UsageError(
            f"{path} cannot be loaded ({type(exc).__name__}); allowed: a policy.pt2 written by "
            "launch.py"
        ) from None
    check_fits(program, info, env_id, path)
    return program.module()


def check_flags(args: argparse.Namespace) -> None:
    if args.episodes < 1:
        raise UsageError(f"--episodes={args.episodes} is invalid: must be a whole number >= 1")
    most = num_eval_envs(args.episodes)
    if not 0 <= args.video <= most:
        raise UsageError(
            f"--video={args.video} is invalid: must lie in [0, {most}] (at most one video per "
            f"evaluation env: min(--episodes, 50))"
        )
    missing = missing_video_packages() if args.video else []
    if missing:
        raise UsageError(
            f"--video needs the packages {', '.join(missing)}, which are not installed: "
            "pip install -r requirements-video.txt"
        )


class Progress:
    """Prints a line each time another batch (one episode per evaluation env) has finished."""

    def __init__(self, total: int, batch: int):
        self.total, self.batch = total, batch
        self.returns = []
        self.start = time.monotonic()

    def __call__(self, episode_return: float, length: int) -> None:
        self.returns.append(episode_return)
        done = len(self.returns)
        if done % self.batch and done != self.total:
            return
        last = self.returns[-((done - 1) % self.batch + 1) :]
        print(
            f"[{time.monotonic() - self.start:7.1f}s] episodes {done:>5}/{self.total} | this batch: mean "
            f"{np.mean(last):9.2f}, min {min(last):9.2f}, max {max(last):9.2f} | all: mean "
            f"{np.mean(self.returns):9.2f}",
            flush=True,
        )


def watch(args: argparse.Namespace) -> dict:
    """Play the run as the flags say; returns {"episodes": Episodes, "videos": [paths written], ...}.
    UsageError before anything is played or written when an input is bad."""
    check_flags(args)
    run_dir = args.run_dir
    if not run_dir.is_dir():
        raise UsageError(
            f"run_dir={str(run_dir)!r} is invalid: no such directory; allowed: a run directory "
            "written by launch.py (runs/<name>)"
        )
    cfg = load_config(run_dir)
    try:
        info = envs_lib.describe(cfg.env)
    except envs_lib.EnvError as exc:
        raise UsageError(f"run_dir={str(run_dir)!r} was trained on {cfg.env}: {exc}") from None
    if args.checkpoint is not None:
        path = checkpoint_path(run_dir, args.checkpoint)
        policy, source = checkpoint_policy(cfg, info, path), path.name
    else:
        policy, source = exported_policy(run_dir, info, cfg.env), POLICY_FILE
    seed = envs_lib.derive_seed(cfg.seed, "watch", args.seed_set)
    num_envs = num_eval_envs(args.episodes)
    mode = "greedy" if args.greedy else "sampled"
    paths = [
        run_dir / "videos" / f"{Path(source).stem}-{mode}-set{args.seed_set}-episode{k}.mp4"
        for k in range(args.video)
    ]
    watched = [
        lambda env, p=p: EpisodeVideo(env, p, envs_lib.video_fps(cfg.env, env)) for p in paths
    ]
    print(
        f"evaluate.py: {run_dir} | {cfg.env} | {source} | {mode} | {args.episodes} episodes on {num_envs} envs, "
        f"env seeds {seed}..{seed + num_envs - 1} (role 'watch', --seed-set {args.seed_set})",
        flush=True,
    )
    episodes = play(
        policy,
        cfg.env,
        args.episodes,
        seed,
        args.greedy,
        watched,
        Progress(args.episodes, num_envs),
    )
    return {
        "episodes": episodes,
        "videos": [p for p in paths if p.is_file()],
        "source": source,
        "mode": mode,
        "seed": seed,
    }


def format_table(result: dict) -> str:
    e: Episodes = result["episodes"]
    r = e.returns
    lines = [
        f"\n{'policy':<22}{'mode':<9}{'episodes':>9}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}{'mean steps':>12}",
        f"{result['source']:<22}{result['mode']:<9}{len(r):>9}{r.mean():>10.2f}{r.std():>10.2f}{r.min():>10.2f}"
        f"{r.max():>10.2f}{e.lengths.mean():>12.1f}",
    ]
    for k, path in enumerate(result["videos"]):
        lines.append(
            f"video: {path} (episode {k}: return {r[k]:.2f}, {e.lengths[k]} steps, "
            f"{e.lengths[k] + 1} frames)"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    try:
        result = watch(build_parser().parse_args(argv))
    except UsageError as exc:
        return exit_usage("evaluate.py", exc)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
