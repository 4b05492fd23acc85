"""Run configuration: one dataclass, presets, validation and the command line.

Every field has a comment; `--field-name VALUE` on the command line overrides the
preset, which overrides the defaults. `validate` checks cross-field constraints and
raises ConfigError with a one-line message naming the field and what is allowed.
"""
import argparse
import dataclasses
import functools
import inspect
import io
import math
import os
import re
import tokenize
from dataclasses import dataclass, fields
from typing import Optional

from common.losses import LossParams
from common.networks import TORSOS, NetworkSpec, auto_torso, torso_problem
from replay.rate_limit import shard_minimum


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
    task_events: bool = False           # record every remote call in Ray's task list (dashboard Tasks view,
                                        # `ray list tasks`): the GCS then keeps one record per call, up to
                                        # 100k, and its memory grows by ~12 MB/min (docs/soak.md)
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
    replay_capacity: int = 2000         # sequences, over all shards (FIFO eviction); ~10k env steps at stride 5
    replay_fraction: float = 0.5        # share of each batch sampled uniformly from replay (rest fresh)
    min_replay: int = 32                # sequences stored before learning starts
    batch_size: int = 64                # B: sequences per learner batch
    starts_per_sequence: int = 3        # start states unrolled per sequence (0 = all valid ones); 3 of T = 10
                                        # costs ~40% less per update than all 10 and CartPole needed about as
                                        # many updates (docs/solve-starts-per-sequence.json)
    # --- learner -----------------------------------------------------------------------
    learning_rate: float = 3e-3         # optimiser step size (the start of the decay with --lr-decay-steps)
    lr_decay_steps: int = 0             # decay the learning rate linearly to 0 over this many steps (0 = constant)
    weight_decay: float = 0.0           # decoupled weight decay with 'adamw', L2 penalty with 'adam'
    optimizer: str = "adam"             # 'adam' or 'adamw'
    max_grad_norm: float = 5.0          # global-norm clipping (0 = off)
    grad_clip_value: float = 0.0        # element-wise clipping, the seed's choice (0 = off)
    dynamics_grad: str = "hidden"       # where --dynamics-grad-scale applies: 'hidden', the state entering g
                                        # (MuZero's scale_gradient); 'params', g's parameter gradients (seed)
    dynamics_grad_scale: float = 0.5    # gradient scale of the dynamics g (Muesli / MuZero: 0.5; 1.0 = off)
    target_ema: float = 0.1             # alpha in target <- (1 - alpha) target + alpha online, per learner step
    target_blend_every_steps: int = 0   # also blend target <- (target + online) / 2 every N learner steps (seed)
    publish_every: int = 10             # learner steps between weight publications
    actors_use_online: bool = False     # actors act with the online network instead of the target
    replay_error_buffer: int = 64       # how far (in inserted sequences) actors may run ahead of the replay ratio or
                                        # the learner behind it; at least a batch of samples (replay/rate_limit.py)
    replay_ratio: float = 38.4          # sampled sequences per inserted sequence, enforced by each replay shard
                                        # (replay/rate_limit.py; 0 = no limit; finite). With stride s each inserted
                                        # sequence brings about s new env steps: updates per env step are about
                                        # replay_ratio / (batch_size * s). Not the paper's replay proportion,
                                        # which is --replay-fraction.
    device: str = "auto"                # learner device: 'auto' (CUDA when present), 'cpu', 'cuda'
    precision: str = "auto"             # learner matmuls: 'auto' (bf16 on a CUDA device that has it, else fp32), 'fp32', 'bf16'
    compile: str = "auto"               # torch.compile the learner's loss: 'auto' (CUDA: at the first update; CPU: from
                                        # the user's cache, built after a config's first run, never waited for), 'on'
                                        # (at the first update), 'off'; eager if it fails
    # --- network -----------------------------------------------------------------------
    torso: str = "auto"                 # 'auto' (rank-3 images: conv, else MLP), 'mlp', 'atari', 'minatar'
    width: int = 64                     # MLP width of every sub-network
    depth: int = 2                      # hidden layers per MLP
    hidden_size: int = 64               # model state size (0 = obs_dim // 2, the seed's choice)
    support_size: int = 30              # categorical heads over [-S, S] after h (0 = scalar heads)
    # --- loss (see common/losses.py) ---------------------------------------------------
    discount: float = 0.99              # gamma: discount per env step
    unroll_steps: int = 5               # K: model steps unrolled from each start state
    retrace_lambda: float = 0.95        # lambda of the Retrace value targets
    value_target: str = "retrace"       # 'retrace' or 'mc' (every trace 1: discounted returns, the seed's)
    retrace_q: str = "v"                # q terms of Retrace: 'v' (v(s) for both), 'model' (paper: the target's one-step
                                        # q, E_prior q(s, .) and q(s, a_t)); common/retrace.py
    value_head_target: str = "return"   # value head target: 'return' (G_t, an estimate of q(s_t, a_t)) or 'value'
                                        # (V_t = E q + c_t (G_t - q_t), the state value consistent with Retrace)
    pg_normalizer: str = "own"          # scale of the policy-gradient advantage G - v: 'own' running std, or
                                        # 'shared' with the CMPO advantages q - v (paper)
    policy_terms_every_state: bool = True   # L_pg, L_reg, k = 0 value loss on every valid state (paper); only the
                                        # model unroll uses --starts-per-sequence (docs/ablations.md: CartPole
                                        # median 16,640 env steps to solve, 22,784 with start states only)
    cmpo_clip: float = 1.0              # c: normalised advantages are clipped to [-c, c] in the CMPO policy
    reg_weight: float = 1.0             # lambda_reg: weight of the CMPO regulariser (a loss weight, as in the paper)
    reg_samples: int = 0                # actions sampled for the CMPO regulariser (0 = exact KL over all actions)
    value_weight: float = 0.25          # weight of the value loss
    reward_weight: float = 1.0          # weight of the reward loss
    model_weight: float = 1.0           # weight of the model's policy loss on the unrolled steps
    pg_weight: float = 1.0              # weight of the policy-gradient loss
    adv_beta: float = 0.99              # beta: decay of the advantage normalisers' moving second moment
    prior_behaviour_weight: float = 0.03  # share of the behaviour policy in the CMPO prior
    prior_uniform_weight: float = 0.003   # share of the uniform policy in the CMPO prior
    # --- stopping and evaluation -------------------------------------------------------
    eval_episodes: int = 100            # greedy evaluation episodes (own env seeds)
    eval_every_env_steps: int = 2048    # env steps between evaluations (the SB3 peer of bench/solve.py also uses 2048)
    eval_screen_episodes: int = 10      # a cheap first look; the full evaluation runs only if it reaches the bar
    sampled_eval_episodes: int = 10     # at the end: sampled (not greedy) episodes of the exported policy
    eval_min_train_return: float = 0.0  # skip evaluation while the recent training return is below this
    solve_return: Optional[float] = None  # stop at this greedy eval mean (None = the env's reward_threshold)
    max_env_steps: int = 2_000_000      # stop after this many env steps (all actors)
    max_seconds: float = 600.0          # stop after this many seconds of the run (counted on over --resume)
    checkpoint_every_s: float = 60.0    # seconds between learner checkpoints
    keep_checkpoints: int = 3           # newest checkpoints kept; older ones are deleted

    def network_spec(self, info) -> NetworkSpec:
        """Architecture for an env described by common.envs.EnvInfo; ConfigError when --torso
        cannot take the env's observations."""
        torso = auto_torso(info.obs_shape) if self.torso == "auto" else self.torso
        problem = torso_problem(torso, info.obs_shape)
        if problem:
            raise ConfigError(f"--torso={self.torso!r} is invalid for --env={self.env!r} (observations "
                              f"{tuple(info.obs_shape)} {info.obs_dtype}): {problem}")
        hidden = self.hidden_size or max(1, int(info.obs_shape[0]) // 2)
        return NetworkSpec(tuple(info.obs_shape), info.num_actions, torso, self.width, self.depth, hidden,
                           self.support_size)

    def loss_params(self) -> LossParams:
        """The loss's view of this config: its fields of the same name, plus two derived ones."""
        derived = {"hidden_grad_scale": self.dynamics_grad_scale if self.dynamics_grad == "hidden" else 1.0,
                   "max_starts": self.starts_per_sequence * self.batch_size}  # the learner's random_start_mask
        names = {f.name for f in fields(LossParams)} - set(derived) - {"adv_eps"}
        return LossParams(**{name: getattr(self, name) for name in names}, **derived)


PRESETS = {
    # The defaults: tuned by bench/sweep.py seed sweeps on a 2-core machine (docs/tuning.md): Adam 3e-3,
    # replay 2000 sequences, replay ratio 38.4 (about 0.12 updates of 64 sequences per env step).
    "cartpole": {},
    # The blog post in shared/seed (MUESLI.md "The seed preset"), its defects fixed.
    # Loss weights: the blog's L_v sums 0.5 (v - G)^2 over the K + 1 = 3 unrolled steps and is
    # divided by 3 and by 4 (`L_v/3/4`), L_r sums over the K = 2 steps and is halved; our losses
    # average over steps, so the same weighting is value 1/4 and reward 1 (model: a mean, 1/4).
    # One sequence is one episode (length 500 = the time limit, stride 500), so a replay ratio of
    # 120 sampled sequences per inserted one is the blog's 20 updates of 6 sequences per episode,
    # and a blend every 600 learner steps its blend every 30 episodes; actors and learner run at most
    # 6 episodes (a batch) apart, as the blog's loop alternated collecting and learning.
    "seed": dict(
        width=128, depth=2, hidden_size=0, support_size=0, unroll_steps=2, value_target="mc", discount=0.99,
        reg_samples=2, reg_weight=5.0, pg_weight=1.0, value_weight=0.25, reward_weight=1.0, model_weight=0.25,
        sequence_length=500, sequence_stride=500, batch_size=6, starts_per_sequence=5, replay_fraction=5 / 6,
        min_replay=6, replay_capacity=5000, replay_ratio=120.0, replay_error_buffer=6,
        optimizer="adamw",
        learning_rate=3e-4, weight_decay=0.0, max_grad_norm=0.0, grad_clip_value=1.0, dynamics_grad="params",
        target_ema=0.01, target_blend_every_steps=600, actors_use_online=True, envs_per_actor=1,
        policy_terms_every_state=False,  # the blog's policy terms use its 5 start states only
        prior_behaviour_weight=0.0, prior_uniform_weight=0.0, actor_chunk_steps=64, weight_pull_every=1,
        publish_every=1, max_seconds=1800.0),
    # Beyond CartPole (issue 8). Untuned starting points: the loss settings are the paper's Atari
    # values (shared/MUESLI.md: K=5, target EMA 0.1, Retrace lambda 0.95, CMPO clip 1, lambda_reg 1,
    # loss weights value 0.25 / reward 1 / model 1, prior 0.967 target + 0.03 behaviour + 0.003
    # uniform), which are this file's defaults; the scale (batch, sequence length, replay size,
    # network width) is cut down so that a 2-core machine can run them and a 16-core GPU machine
    # runs them fast. Envs that need extra packages: pip install -r requirements-envs.txt.
    #
    # LunarLander-v3 (Box2D): 8 floats, 4 actions, episodes up to 1000 steps; solved at a greedy
    # 100-episode mean >= 200 (the env's reward threshold). MLP 2x128; gamma 0.99 rather than the
    # paper's 0.995 (episodes are 1000 steps, not Atari's 27k); CartPole's tuned data layout
    # (batch 64 x 10 steps, stride 5, replay share 0.5) with a replay 4x larger (20k sequences,
    # ~100k env steps) and a replay ratio of 6.4 (what 20 learner steps per 1k env steps were before
    # the ratio replaced them: ~1.3 sampled sequences per env step), since a 2x128 learner step costs ~4x a CartPole one and the 2-core budget is
    # 30 minutes; greedy evaluation only once training returns reach 100.
    "lunarlander": dict(
        starts_per_sequence=0,          # every start state: how this preset was measured (docs/results.md)
        env="LunarLander-v3", solve_return=200.0, width=128, depth=2, hidden_size=64, support_size=30,
        discount=0.99, sequence_length=10, sequence_stride=5, batch_size=64, replay_capacity=20_000,
        replay_fraction=0.5, min_replay=64, learning_rate=5e-4, replay_ratio=6.4,
        envs_per_actor=16, eval_every_env_steps=16_000, eval_min_train_return=100.0, max_env_steps=5_000_000,
        max_seconds=1800.0),
    # MinAtar Breakout (package minatar, 'MinAtar/Breakout-v1': the minimal 3-action set; v0 has
    # all 6 actions as in the MinAtar paper): bool 10x10x4 grids (uint8 0/255 here), MinAtar's own
    # sticky actions 0.1. Conv torso as the MinAtar paper's DQN (one 3x3 conv, 16 channels) then
    # 128-wide layers; gamma 0.99 (MinAtar paper); the paper's replay share 0.75 of a 10k-sequence
    # replay (~100k steps, the MinAtar DQN's buffer) and Adam 3e-4; batch 64 x 20 steps; the
    # budget is the MinAtar paper's 5M frames. No reward threshold: evaluate 30 episodes a minute.
    "minatar-breakout": dict(
        starts_per_sequence=0,          # every start state: how this preset was measured (docs/results.md)
        env="MinAtar/Breakout-v1", torso="minatar", width=128, depth=2, hidden_size=128, support_size=30,
        discount=0.99, sequence_length=20, sequence_stride=10, batch_size=64, replay_capacity=10_000,
        replay_fraction=0.75, min_replay=64, learning_rate=3e-4, replay_ratio=12.8,
        envs_per_actor=16, eval_episodes=30, eval_screen_episodes=10, eval_every_env_steps=20_000,
        max_env_steps=5_000_000, max_seconds=1800.0),
    # Atari Pong (ALE/Pong-v5 via ale-py; common/envs.py applies the paper's setting: sticky
    # actions 0.25, full 18 actions, 30 no-ops, frame skip 4, 84x84 grey, 4 stacked frames ->
    # uint8 [4, 84, 84]). Nature-DQN conv torso (the paper used a ResNet + LSTM), 256-wide heads.
    # Paper: batch 96 x 30, replay 6M frames, share 0.75, gamma 0.995, Adam 3e-4 decayed over 200M
    # frames. Here: batch 32 x 20, replay 3000 sequences (~1.8 GB of uint8 frames, ~30k agent
    # steps), share 0.75, gamma 0.99 (a short run), constant Adam 3e-4, support +-10 after h
    # (h(21) = 3.7), replay ratio 3.2 (10 learner steps per 1k agent steps at stride 10).
    # Evaluation is costly (long episodes): 20 episodes every 2 minutes once training returns
    # reach 15; stop at a greedy mean of +18.
    "atari-pong": dict(
        starts_per_sequence=0,          # every start state: how this preset was measured (docs/results.md)
        env="ALE/Pong-v5", torso="atari", width=256, depth=2, hidden_size=256, support_size=10,
        discount=0.99, sequence_length=20, sequence_stride=10, batch_size=32, replay_capacity=3000,
        replay_fraction=0.75, min_replay=64, learning_rate=3e-4, replay_ratio=3.2,
        envs_per_actor=8, weight_pull_every=256, solve_return=18.0, eval_episodes=20, eval_screen_episodes=5,
        eval_every_env_steps=50_000, eval_min_train_return=15.0, max_env_steps=10_000_000, max_seconds=3600.0),
}

CHOICES = {
    "preset": tuple(PRESETS), "torso": ("auto",) + TORSOS, "value_target": ("retrace", "mc"),
    "retrace_q": ("v", "model"), "value_head_target": ("return", "value"), "pg_normalizer": ("own", "shared"),
    "optimizer": ("adam", "adamw"), "dynamics_grad": ("hidden", "params"), "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"), "compile": ("auto", "on", "off"),
}


MAX_EVAL_EPISODES = 10_000     # 100x the default; an evaluation is not cut short by --max-seconds, so it must end


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
    if cfg.seed < 0:
        bad("seed", "must be a whole number >= 0")
    if cfg.run_name and (os.path.isabs(cfg.run_name) or os.sep in cfg.run_name or "/" in cfg.run_name
                         or cfg.run_name in (".", "..")):
        bad("run_name", "must be a plain folder name (no '/', not '.' or '..'); the run directory is "
            "created inside --run-root")
    if cfg.num_actors < 0:
        bad("num_actors", "must be a whole number >= 1, or 'auto' (0) to fill the cluster's free CPUs")
    for name in ("num_replay_shards", "replay_error_buffer", "envs_per_actor", "actor_chunk_steps", "weight_pull_every",
                 "sequence_length", "sequence_stride", "replay_capacity", "batch_size", "min_replay", "width",
                 "depth", "publish_every", "eval_every_env_steps", "eval_episodes", "eval_screen_episodes", "sampled_eval_episodes", "keep_checkpoints", "torch_threads"):
        if getattr(cfg, name) < 1:
            bad(name, "must be a whole number >= 1")
    for name in ("eval_episodes", "eval_screen_episodes", "sampled_eval_episodes"):
        if getattr(cfg, name) > MAX_EVAL_EPISODES:
            bad(name, f"must be <= {MAX_EVAL_EPISODES:,} (evaluations are not cut short by --max-seconds)")
    for name in ("num_cpus", "hidden_size", "support_size", "unroll_steps", "reg_samples", "starts_per_sequence",
                 "lr_decay_steps", "target_blend_every_steps", "max_env_steps", "metrics_export_port"):
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
    for name in ("dynamics_grad_scale", "max_grad_norm", "grad_clip_value", "weight_decay", "cmpo_clip", "reg_weight", "value_weight",
                 "reward_weight", "model_weight", "pg_weight", "replay_ratio", "max_seconds", "checkpoint_every_s"):
        if getattr(cfg, name) < 0:
            bad(name, "must be >= 0")
    if cfg.replay_ratio == math.inf:    # a limit no insert can satisfy: actors and learner both wait forever
        bad("replay_ratio", "must be finite (0 = no limit)")
    if cfg.prior_behaviour_weight + cfg.prior_uniform_weight > 1.0:
        bad("prior_behaviour_weight", "prior_behaviour_weight + prior_uniform_weight must be <= 1")
    if cfg.sequence_stride > cfg.sequence_length:
        bad("sequence_stride", f"must be <= --sequence-length={cfg.sequence_length}")
    if cfg.batch_size > cfg.replay_capacity:
        bad("batch_size", f"must be <= --replay-capacity={cfg.replay_capacity} (a batch larger than replay never fills)")
    if cfg.min_replay > cfg.replay_capacity:
        bad("min_replay", f"must be <= --replay-capacity={cfg.replay_capacity}")
    smallest_shard = cfg.replay_capacity // cfg.num_replay_shards
    if smallest_shard < shard_minimum(cfg.min_replay, cfg.batch_size, cfg.num_replay_shards):
        bad("replay_capacity", f"must give each of the {cfg.num_replay_shards} shards room for its share of "
            f"max(--min-replay, --batch-size) = {max(cfg.min_replay, cfg.batch_size)}; the smallest shard holds "
            f"{smallest_shard}")
    if cfg.num_replay_shards > cfg.batch_size:
        bad("num_replay_shards", f"must be <= --batch-size={cfg.batch_size} (every shard serves part of a batch)")
    if cfg.max_restarts < -1:
        bad("max_restarts", "must be >= 0, or -1 for no limit")
    if cfg.metrics_export_port > 65535:
        bad("metrics_export_port", "must be a TCP port in [0, 65535] (0 = Ray's default)")
    if cfg.in_process and cfg.address:
        bad("address", "cannot be combined with --in-process")
    return cfg


@functools.lru_cache(maxsize=None)
def field_help() -> dict:
    """{field name: its description}, read from the comments in the source of Config (one source
    of truth): the comment on a field's line plus the comment-only lines indented below it (a
    comment-only line at the fields' own indentation heads a section and belongs to no field)."""
    source = inspect.getsource(Config)
    comments = {tok.start[0]: (tok.start[1], tok.string.lstrip("#").strip())
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    helps, current = {}, None
    for row, line in enumerate(source.splitlines(), start=1):
        field_line = re.match(r"    (\w+): ", line)
        if field_line:
            current = field_line.group(1)
            helps[current] = [comments[row][1]] if row in comments else []
        elif current and row in comments and line.lstrip().startswith("#") and comments[row][0] > 4:
            helps[current].append(comments[row][1])
        else:
            current = None
    return {name: " ".join(parts) for name, parts in helps.items()}


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
    """One flag per Config field; its help is the field's comment (field_help)."""
    parser = argparse.ArgumentParser(description="Muesli on Ray: train an agent on a gymnasium env.")
    helps = field_help()
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "").replace("%", "%%")        # argparse formats help with %
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=_parse_value(f.type, f.name in AUTO_FIELDS), default=None,
                                metavar=f.name.upper(), help=text)
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


def saved_config(run_dir: str, flag: str = "--resume") -> dict:
    """The config.json of a run directory (for --resume, where flags given with it override it,
    and for evaluate.py); `flag` names the argument in the error message."""
    import json
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}={run_dir!r} is invalid: cannot read {path} ({type(exc).__name__}); "
                          "allowed: a run directory written by launch.py") from None
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["<not a JSON object>"]
    if unknown:
        raise ConfigError(f"{flag}={run_dir!r} is invalid: {path} has unknown fields {unknown}; "
                          "allowed: the fields of common/config.Config")
    for f in fields(Config):
        if f.name in saved and not _json_value_fits(saved[f.name], f.type):
            raise ConfigError(f"{flag}={run_dir!r} is invalid: {path} field {f.name!r} is "
                              f"{saved[f.name]!r} ({type(saved[f.name]).__name__}); allowed: {_type_name(f.type)}")
    return saved


def _json_value_fits(value, kind) -> bool:
    """Whether a value read from config.json has the field's type (an int passes for a float;
    a bool, which JSON keeps apart, passes only for a bool)."""
    if value is None:
        return kind in (Optional[float], Optional[str])
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind in (float, Optional[float]):
        return isinstance(value, (int, float))
    if kind in (str, Optional[str]):
        return isinstance(value, str)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    names = {float: "a number", int: "a whole number", str: "a string", bool: "true or false",
             Optional[float]: "a number or null", Optional[str]: "a string or null"}
    return names[kind]


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
