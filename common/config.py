"""Run configuration: one dataclass, presets, validation and the command line.

Every field has a comment; `--field-name VALUE` on the command line overrides the
preset, which overrides the defaults. `validate` checks cross-field constraints and
raises ConfigError with a one-line message naming the field and what is allowed.
"""
import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, fields
from typing import Optional

from common.losses import LossParams
from common.networks import NetworkSpec


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the field."""


@dataclass
class Config:
    # --- run ---------------------------------------------------------------------------
    preset: str = "cartpole"            # starting point: see PRESETS
    env: str = "CartPole-v1"            # gymnasium id with a discrete action space
    seed: int = 0                       # run seed; actor, eval and torch seeds derive from it
    run_root: str = "runs"              # run directories are created below this folder
    run_name: str = ""                  # default: <env>-<preset>-s<seed>-<time>
    resume: Optional[str] = None        # run directory to continue: its config.json, newest readable checkpoint
    # --- system ------------------------------------------------------------------------
    address: Optional[str] = None       # Ray cluster to join ('auto' or HOST:PORT); None = start local Ray
    ship_code: bool = True              # with --address: upload this project's code to the cluster (runtime_env)
    in_process: bool = False            # run every component in this process, without Ray
    num_cpus: int = 0                   # CPUs for a local Ray (0 = all of this machine's)
    dashboard: bool = True              # start the Ray dashboard with a local Ray
    metrics_export_port: int = 0        # Prometheus endpoint port of a local Ray node (0 = Ray's default)
    num_actors: int = 1                 # self-play actor processes (0 or 'auto' = one per free cluster CPU)
    num_replay_shards: int = 1          # replay shard processes
    max_restarts: int = 20              # Ray restarts of each actor / shard after a crash or lost node (-1 = no limit)
    envs_per_actor: int = 16            # vectorised envs stepped together by one actor
    actor_chunk_steps: int = 256        # env steps (all envs) per actor call between bookkeeping
    weight_pull_every: int = 128        # env steps (all envs of an actor) between weight pulls
    torch_threads: int = 1              # intra-op threads in each actor and the CPU learner
    # --- data --------------------------------------------------------------------------
    sequence_length: int = 10           # T: steps per stored sequence (+1 bootstrap observation)
    sequence_stride: int = 5            # steps between starts of consecutive sequences of one env
    replay_capacity: int = 5000         # sequences, over all shards (FIFO eviction)
    replay_fraction: float = 0.5        # share of each batch sampled uniformly from replay (rest fresh)
    min_replay: int = 32                # sequences stored before learning starts
    batch_size: int = 64                # B: sequences per learner batch
    starts_per_sequence: int = 0        # start states used per sequence (0 = all valid ones)
    # --- learner -----------------------------------------------------------------------
    learning_rate: float = 1e-3
    lr_decay_steps: int = 0             # decay the learning rate linearly to 0 over this many steps (0 = constant)
    weight_decay: float = 0.0
    optimizer: str = "adam"             # 'adam' or 'adamw'
    max_grad_norm: float = 5.0          # global-norm clipping (0 = off)
    grad_clip_value: float = 0.0        # element-wise clipping, the seed's choice (0 = off)
    dynamics_grad: str = "hidden"       # 'hidden': scale the state entering g by 0.5; 'params': scale g's grads by 0.5
    target_ema: float = 0.1             # alpha in target <- (1 - alpha) target + alpha online, per learner step
    target_blend_every_episodes: int = 0  # also blend target <- (target + online) / 2 every N episodes (seed)
    publish_every: int = 10             # learner steps between weight publications
    actors_use_online: bool = False     # actors act with the online network instead of the target
    learner_steps_per_1k_env_steps: float = 40.0  # throttle: learner steps allowed per 1000 env steps (0 = off)
    learner_steps_per_episode: float = 0.0       # throttle: learner steps allowed per finished episode (0 = off)
    device: str = "auto"                # learner device: 'auto' (CUDA when present), 'cpu', 'cuda'
    # --- network -----------------------------------------------------------------------
    torso: str = "auto"                 # 'auto', 'mlp', 'atari', 'minatar'
    width: int = 64
    depth: int = 2
    hidden_size: int = 64               # model state size (0 = obs_dim // 2, the seed's choice)
    support_size: int = 30              # categorical heads over [-S, S] after h (0 = scalar heads)
    # --- loss (see common/losses.py) ---------------------------------------------------
    discount: float = 0.99
    unroll_steps: int = 5
    retrace_lambda: float = 0.95
    value_target: str = "retrace"       # 'retrace' or 'mc'
    cmpo_clip: float = 1.0
    reg_weight: float = 1.0
    reg_samples: int = 0                # 0 = exact KL over all actions
    value_weight: float = 0.25
    reward_weight: float = 1.0
    model_weight: float = 1.0
    pg_weight: float = 1.0
    adv_beta: float = 0.99
    prior_behaviour_weight: float = 0.03
    prior_uniform_weight: float = 0.003
    # --- stopping and evaluation -------------------------------------------------------
    eval_episodes: int = 100            # greedy evaluation episodes (own env seeds)
    eval_every_s: float = 5.0           # seconds between evaluations
    eval_screen_episodes: int = 10      # a cheap first look; the full evaluation runs only if it reaches the bar
    eval_min_train_return: float = 0.0  # skip evaluation while the recent training return is below this
    solve_return: Optional[float] = None  # stop at this greedy eval mean (None = the env's reward_threshold)
    max_env_steps: int = 2_000_000
    max_seconds: float = 600.0
    checkpoint_every_s: float = 60.0    # seconds between learner checkpoints
    keep_checkpoints: int = 3

    def network_spec(self, info) -> NetworkSpec:
        """Architecture for an env described by common.envs.EnvInfo."""
        torso = self.torso
        if torso == "auto":
            torso = "mlp" if len(info.obs_shape) == 1 else ("atari" if max(info.obs_shape) >= 32 else "minatar")
        hidden = self.hidden_size or max(1, int(info.obs_shape[0]) // 2)
        return NetworkSpec(tuple(info.obs_shape), info.num_actions, torso, self.width, self.depth, hidden,
                           self.support_size)

    def loss_params(self) -> LossParams:
        names = {f.name for f in fields(LossParams)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        values["hidden_grad_scale"] = 0.5 if self.dynamics_grad == "hidden" else 1.0
        return LossParams(**values)


PRESETS = {
    # Tuned by bench/solve.py on a 2-core machine; see docs/results.md.
    "cartpole": {},
    # The blog post in shared/seed (MUESLI.md "The seed preset"), its defects fixed.
    "seed": dict(
        width=128, depth=2, hidden_size=0, support_size=0, unroll_steps=2, value_target="mc", discount=0.99,
        reg_samples=2, reg_weight=5.0, pg_weight=1.0, value_weight=1 / 12, reward_weight=0.5, model_weight=0.25,
        sequence_length=500, sequence_stride=500, batch_size=6, starts_per_sequence=5, replay_fraction=5 / 6,
        min_replay=6, replay_capacity=5000, learner_steps_per_episode=20.0, learner_steps_per_1k_env_steps=0.0,
        optimizer="adamw",
        learning_rate=3e-4, weight_decay=0.0, max_grad_norm=0.0, grad_clip_value=1.0, dynamics_grad="params",
        target_ema=0.01, target_blend_every_episodes=30, actors_use_online=True, envs_per_actor=1,
        prior_behaviour_weight=0.0, prior_uniform_weight=0.0, actor_chunk_steps=64, weight_pull_every=1,
        publish_every=1, max_seconds=1800.0),
}

CHOICES = {
    "preset": tuple(PRESETS), "torso": ("auto", "mlp", "atari", "minatar"), "value_target": ("retrace", "mc"),
    "optimizer": ("adam", "adamw"), "dynamics_grad": ("hidden", "params"), "device": ("auto", "cpu", "cuda"),
}


def validate(cfg: Config) -> Config:
    """Raise ConfigError naming the first bad field; return cfg unchanged otherwise."""
    def bad(name, allowed):
        raise ConfigError(f"--{name.replace('_', '-')}={getattr(cfg, name)!r} is invalid: {allowed}")

    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            bad(name, "allowed: " + ", ".join(allowed))
    for f in fields(cfg):  # NaN slips through every `x < 0` check below
        if isinstance(getattr(cfg, f.name), float) and math.isnan(getattr(cfg, f.name)):
            bad(f.name, "must be a number, not NaN")
    if cfg.num_actors < 0:
        bad("num_actors", "must be a whole number >= 1, or 'auto' (0) to fill the cluster's free CPUs")
    for name in ("num_replay_shards", "envs_per_actor", "actor_chunk_steps", "weight_pull_every",
                 "sequence_length", "sequence_stride", "replay_capacity", "batch_size", "min_replay", "width",
                 "depth", "publish_every", "eval_episodes", "eval_screen_episodes", "keep_checkpoints", "torch_threads"):
        if getattr(cfg, name) < 1:
            bad(name, "must be a whole number >= 1")
    for name in ("num_cpus", "hidden_size", "support_size", "unroll_steps", "reg_samples", "starts_per_sequence",
                 "lr_decay_steps", "target_blend_every_episodes", "max_env_steps", "metrics_export_port"):
        if getattr(cfg, name) < 0:
            bad(name, "must be >= 0")
    for name in ("replay_fraction", "retrace_lambda", "adv_beta", "target_ema", "prior_behaviour_weight",
                 "prior_uniform_weight"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad(name, "must lie in [0, 1]")
    if not 0.0 < cfg.discount <= 1.0:
        bad("discount", "must lie in (0, 1]")
    if not 0 < cfg.learning_rate < math.inf:
        bad("learning_rate", "must be > 0 and finite")
    for name in ("max_grad_norm", "grad_clip_value", "weight_decay", "cmpo_clip", "reg_weight", "value_weight",
                 "reward_weight", "model_weight", "pg_weight", "learner_steps_per_1k_env_steps",
                 "learner_steps_per_episode", "eval_every_s", "max_seconds", "checkpoint_every_s"):
        if getattr(cfg, name) < 0:
            bad(name, "must be >= 0")
    if cfg.prior_behaviour_weight + cfg.prior_uniform_weight > 1.0:
        bad("prior_behaviour_weight", "prior_behaviour_weight + prior_uniform_weight must be <= 1")
    if cfg.sequence_stride > cfg.sequence_length:
        bad("sequence_stride", f"must be <= --sequence-length={cfg.sequence_length}")
    if cfg.batch_size > cfg.replay_capacity:
        bad("batch_size", f"must be <= --replay-capacity={cfg.replay_capacity} (a batch larger than replay never fills)")
    if cfg.min_replay > cfg.replay_capacity:
        bad("min_replay", f"must be <= --replay-capacity={cfg.replay_capacity}")
    if cfg.num_replay_shards > cfg.batch_size:
        bad("num_replay_shards", f"must be <= --batch-size={cfg.batch_size} (every shard serves part of a batch)")
    if cfg.max_restarts < -1:
        bad("max_restarts", "must be >= 0, or -1 for no limit")
    if cfg.metrics_export_port > 65535:
        bad("metrics_export_port", "must be a TCP port in [0, 65535] (0 = Ray's default)")
    if cfg.in_process and cfg.address:
        bad("address", "cannot be combined with --in-process")
    return cfg


AUTO_FIELDS = ("num_actors",)         # int fields where 'auto' on the command line means 0


def _parse_value(kind, auto: bool = False):
    """argparse type for a field annotation: int, float, str, Optional[float], Optional[str];
    with `auto`, the word 'auto' parses to 0."""
    optional = kind in (Optional[float], Optional[str])
    base = float if kind == Optional[float] else str if kind == Optional[str] else kind

    def parse(text):
        if auto and text.lower() == "auto":
            return 0
        return None if optional and text.lower() == "none" else base(text)
    parse.__name__ = base.__name__  # argparse names it in "invalid int value: 'abc'"
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Muesli on Ray: train an agent on a gymnasium env.")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=_parse_value(f.type, f.name in AUTO_FIELDS), default=None,
                                metavar=f.name.upper())
    return parser


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one-line error instead of usage + exit inside argparse
        raise ConfigError(message)


def parse_config(argv=None) -> Config:
    """Defaults <- preset <- command line; then validate."""
    parser = build_parser()
    parser.__class__ = _Parser
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    given = {k: v for k, v in vars(args).items() if v is not None}
    if given.get("resume"):
        base = saved_config(given["resume"])
    else:
        preset = given.get("preset", "cartpole")
        if preset not in PRESETS:
            raise ConfigError(f"--preset={preset!r} is invalid: allowed: " + ", ".join(PRESETS))
        base = PRESETS[preset]
    cfg = Config(**{**base, **given})
    if cfg.num_cpus == 0 and cfg.address is None:
        cfg.num_cpus = os.cpu_count() or 1
    return validate(cfg)


def saved_config(run_dir: str) -> dict:
    """The config.json of a run directory (for --resume); flags given with --resume override it."""
    import json
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume={run_dir!r} is invalid: cannot read {path} ({type(exc).__name__}); "
                          "allowed: a run directory written by launch.py") from None
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["<not a JSON object>"]
    if unknown:
        raise ConfigError(f"--resume={run_dir!r} is invalid: {path} has unknown fields {unknown}; "
                          "allowed: the fields of common/config.Config")
    return saved


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
