"""Muesli on Ray from Python: train from a Config and get the summary back; load a run's policy.

    from muesli_ray import Config, train, load_policy

    summary = train(Config(env="CartPole-v1", in_process=True, max_seconds=120))
    summary = train(with_preset("lunarlander", seed=1))  # a preset, then fields
    policy = load_policy(summary["run_dir"])
    action = policy(observation)          # one observation -> one action (greedy)

`launch.py` is the command line over `start` and the same training loop. Bad input raises
ConfigError (or another BAD_INPUT error) before Ray starts or anything is written; a run that fails
after start-up raises RunFailed, with the summary.json it wrote.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from actors.sampling import sample_categorical
from common import envs as envs_lib
from common.config import Config, ConfigError, for_this_machine, validate, with_preset
from common.vector_env import EnvFailure
from driver import placement, preflight, run_lock
from driver.stopping import stop_on_signals
from driver.trainer import Trainer, make_run_dir
from driver.trainer import train as run_to_end
from driver.wiring import placed
from learner import checkpoint

__all__ = [
    "BAD_INPUT",
    "Config",
    "ConfigError",
    "Policy",
    "RunFailed",
    "load_policy",
    "train",
    "with_preset",
]

# Raised before anything starts: a bad setting, an env that cannot be made or started, a
# checkpoint that cannot be resumed, a cluster that cannot be joined.
BAD_INPUT = (
    ConfigError,
    envs_lib.EnvError,
    checkpoint.CheckpointError,
    EnvFailure,
    placement.PlacementError,
)


class RunFailed(RuntimeError):
    """A run that failed after start-up; `summary` is what its summary.json holds."""

    def __init__(self, summary: dict):
        super().__init__(
            f"the run failed: {summary.get('error')} (summary.json in {summary['run_dir']})"
        )
        self.summary = summary


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined, if any (an in-process run never imports Ray)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        from driver import on_ray

        on_ray.shutdown_ray()


def end(trainer: Trainer) -> None:
    """The run is over: the Ray it started or joined shut down, its folder given back
    (driver/run_lock.py) for a later --resume."""
    shutdown_ray()
    run_lock.release(trainer.run_dir)


def start(cfg: Config) -> Trainer:
    """Check cfg and its env, place the components (in this process, a local Ray or the cluster
    at cfg.address) and claim the run directory; raises one of BAD_INPUT, with Ray shut down."""
    cfg = validate(
        for_this_machine(cfg)
    )  # again: a Config may have been changed since it was built
    info = envs_lib.describe(cfg.env)
    cfg.network_spec(info)  # a torso that cannot take these observations stops here
    resume = preflight.check(cfg, info)
    preflight.check_env_starts(cfg)
    try:
        cfg, where = placed(cfg, connect=True)  # num_actors resolved before config.json
        run_dir = make_run_dir(cfg)
    except BaseException:
        shutdown_ray()
        raise
    return Trainer(cfg, info, run_dir, resume, where)


def train(cfg: Config) -> dict:
    """Train until a greedy evaluation reaches the solve threshold or a budget runs out; returns
    the summary (also in RUN_DIR/summary.json). The first Ctrl-C finishes the run as a budget
    would; a second one raises KeyboardInterrupt."""
    trainer = start(cfg)
    try:
        with stop_on_signals(trainer):
            return run_to_end(trainer)
    except Exception as exc:
        raise RunFailed(trainer.fail(*trainer.failure(exc))) from exc
    except BaseException as exc:
        trainer.fail(f"{trainer.stop_request or 'interrupted'} twice", type(exc).__name__)
        raise
    finally:
        end(trainer)


class Policy:
    """A run's exported policy (RUN_DIR/policy.pt2) as a callable on numpy observations: one
    observation of the env's shape gives one action (an int), a batch [B, *shape] gives B."""

    def __init__(self, program: torch.nn.Module, obs_shape: tuple, greedy: bool, seed: int):
        self.program, self.obs_shape, self.greedy = program, tuple(obs_shape), greedy
        self.rng = np.random.default_rng(seed)

    def logits(self, obs) -> np.ndarray:
        """Action logits [B, A] of a batch of observations [B, *shape]."""
        obs = np.asarray(obs)
        batch = torch.from_numpy(obs if obs.dtype == np.uint8 else obs.astype(np.float32))
        with torch.no_grad():
            return self.program(batch).numpy()

    def __call__(self, obs):
        obs = np.asarray(obs)
        one = obs.shape == self.obs_shape
        logits = self.logits(obs[None] if one else obs)
        if self.greedy:
            actions = logits.argmax(-1)
        else:  # a draw per row from softmax(logits), as the actors draw
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            actions = sample_categorical(probs / probs.sum(-1, keepdims=True), self.rng)
        return int(actions[0]) if one else actions


def load_policy(run_dir, greedy: bool = True, seed: int = 0) -> Policy:
    """The policy a run exported (its best greedy-evaluated weights), greedy (argmax) or
    sampled from its action distribution with a generator seeded by `seed`."""
    from evaluate import exported_policy, load_config

    run_dir = Path(run_dir)
    env = load_config(run_dir).env
    info = envs_lib.describe(env)
    return Policy(exported_policy(run_dir, info, env), info.obs_shape, greedy, seed)
