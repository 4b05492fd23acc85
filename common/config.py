"""Run configuration: one dataclass, its validation and the command line.

Every field is a `setting` of one section, with its default, its help and, for a word-valued
setting, the words allowed; `--field-name VALUE` on the command line overrides the preset
(common/presets.py), which overrides the defaults. `validate` checks each value and the
constraints between them, raising ConfigError with one line naming the field and what is
allowed.
"""

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field, fields

from common import cli
from common.losses import LossParams
from common.networks import TORSOS, NetworkSpec, auto_torso, torso_problem
from common.presets import ENV_BOUND, PRESETS


class ConfigError(cli.UsageError):
    """A bad configuration value; the message is one line naming the field."""


SECTIONS = {  # --help groups, in order: {title: what their settings decide}
    "run": "What to train, its seed and where its folder goes.",
    "system": "Ray, processes and threads.",
    "data": "Sequences, replay and batches.",
    "learner": "Optimiser, target network, weight publication, replay ratio, device.",
    "network": "Representation h, dynamics g and prediction f.",
    "loss": "Muesli's loss terms and their weights (common/losses.py).",
    "stopping and evaluation": "When the run stops, its evaluations and checkpoints.",
}


def _section(title: str):
    """setting(default, help, choices=()) for the fields of one --help section."""

    def setting(default, help: str, choices: tuple = ()):
        return field(default=default, metadata={"section": title, "help": help, "choices": choices})

    return setting


_run, _system, _data, _learner, _network, _loss, _stop = map(_section, SECTIONS)


@dataclass
class Config:
    """Every setting of a run: `--field-name VALUE` overrides the preset, which overrides the
    defaults below. Each field is a setting(default, help, choices) of one --help section."""

    preset: str = _run(
        "cartpole",
        "starting point: a named set of the settings below (common/presets.py)",
        choices=tuple(PRESETS),
    )
    env: str = _run("CartPole-v1", "gymnasium id with a discrete action space")
    seed: int = _run(0, "run seed; actor, eval and torch seeds derive from it")
    run_root: str = _run("runs", "run directories are created below this folder")
    run_name: str = _run("", "default: <env>-<preset>-s<seed>-<time>")
    resume: str | None = _run(
        None, "run directory to continue: its config.json, newest readable checkpoint"
    )
    address: str | None = _system(
        None, "Ray cluster to join ('auto' or HOST:PORT); None = start local Ray"
    )
    ship_code: bool = _system(
        True, "with --address: upload this project's code to the cluster (runtime_env)"
    )
    in_process: bool = _system(False, "run every component in this process, without Ray")
    num_cpus: int = _system(0, "CPUs for a local Ray (0 = all of this machine's)")
    dashboard: bool = _system(True, "start the Ray dashboard with a local Ray")
    metrics_export_port: int = _system(
        0, "Prometheus endpoint port of a local Ray node (0 = Ray's default)"
    )
    task_events: bool = _system(
        False,
        "record every remote call in Ray's task list (dashboard Tasks view, `ray list tasks`): the GCS then keeps one record per call, up to 100k, and its memory grows by ~12 MB/min (docs/soak.md)",
    )
    num_actors: int = _system(
        1, "self-play actor processes (0 or 'auto' = one per free cluster CPU)"
    )
    num_replay_shards: int = _system(1, "replay shard processes")
    max_restarts: int = _system(
        20, "Ray restarts of each actor / shard after a crash or lost node (-1 = no limit)"
    )
    envs_per_actor: int = _system(16, "vectorised envs stepped together by one actor")
    actor_chunk_steps: int = _system(256, "env steps (all envs) per actor call between bookkeeping")
    weight_pull_every: int = _system(128, "env steps (all envs of an actor) between weight pulls")
    torch_threads: int = _system(1, "intra-op threads in each actor and the CPU learner")
    sequence_length: int = _data(10, "T: steps per stored sequence (+1 bootstrap observation)")
    sequence_stride: int = _data(5, "steps between starts of consecutive sequences of one env")
    replay_capacity: int = _data(
        2000, "sequences, over all shards (FIFO eviction); ~10k env steps at stride 5"
    )
    replay_fraction: float = _data(
        0.5, "share of each batch sampled uniformly from replay (rest fresh)"
    )
    min_replay: int = _data(32, "sequences stored before learning starts")
    batch_size: int = _data(64, "B: sequences per learner batch")
    starts_per_sequence: int = _data(3, "start states unrolled per sequence (0 = all valid ones)")
    learning_rate: float = _learner(
        3e-3, "optimiser step size (the start of the decay with --lr-decay-steps)"
    )
    lr_decay_steps: int = _learner(
        0, "decay the learning rate linearly to 0 over this many steps (0 = constant)"
    )
    weight_decay: float = _learner(
        0.0, "decoupled weight decay with 'adamw', L2 penalty with 'adam'"
    )
    optimizer: str = _learner(
        "adam",
        "optimiser",
        choices=(
            "adam",
            "adamw",
        ),
    )
    max_grad_norm: float = _learner(5.0, "global-norm clipping (0 = off)")
    grad_clip_value: float = _learner(0.0, "element-wise clipping, the seed's choice (0 = off)")
    dynamics_grad: str = _learner(
        "hidden",
        "where --dynamics-grad-scale applies: 'hidden', the state entering g (MuZero's scale_gradient); 'params', g's parameter gradients (seed)",
        choices=(
            "hidden",
            "params",
        ),
    )
    dynamics_grad_scale: float = _learner(
        0.5, "gradient scale of the dynamics g (Muesli / MuZero: 0.5; 1.0 = off)"
    )
    target_ema: float = _learner(
        0.1, "alpha in target <- (1 - alpha) target + alpha online, per learner step"
    )
    target_blend_every_steps: int = _learner(
        0, "also blend target <- (target + online) / 2 every N learner steps (seed)"
    )
    publish_every: int = _learner(10, "learner steps between weight publications")
    actors_use_online: bool = _learner(
        False, "actors act with the online network instead of the target"
    )
    replay_error_buffer: int = _learner(
        64,
        "how far (in inserted sequences) actors may run ahead of the replay ratio or the learner behind it; at least a batch of samples (replay/rate_limit.py)",
    )
    replay_ratio: float = _learner(
        38.4,
        "sampled sequences per inserted sequence, enforced by each replay shard (replay/rate_limit.py; 0 = no limit; finite). With stride s each inserted sequence brings about s new env steps: updates per env step are about replay_ratio / (batch_size * s). Not the paper's replay proportion, which is --replay-fraction.",
    )
    device: str = _learner(
        "auto",
        "learner device: 'auto' is CUDA when present",
        choices=(
            "auto",
            "cpu",
            "cuda",
        ),
    )
    precision: str = _learner(
        "auto",
        "learner matmuls: 'auto' is bf16 on a CUDA device that has it, else fp32",
        choices=(
            "auto",
            "fp32",
            "bf16",
        ),
    )
    compile: str = _learner(
        "auto",
        "torch.compile the learner's loss: 'auto' (CUDA: at the first update; CPU: from the user's cache, built after a config's first run, never waited for), 'on' (at the first update); eager if it fails",
        choices=(
            "auto",
            "on",
            "off",
        ),
    )
    torso: str = _network(
        "auto",
        "observation encoder: 'auto' is a conv net for rank-3 images ('atari' from 36x36, else 'minatar'), else 'mlp'",
        choices=("auto", *TORSOS),
    )
    width: int = _network(64, "MLP width of every sub-network")
    depth: int = _network(2, "hidden layers per MLP")
    hidden_size: int = _network(64, "model state size (0 = obs_dim // 2, the seed's choice)")
    support_size: int = _network(30, "categorical heads over [-S, S] after h (0 = scalar heads)")
    discount: float = _loss(0.99, "gamma: discount per env step")
    unroll_steps: int = _loss(5, "K: model steps unrolled from each start state")
    retrace_lambda: float = _loss(0.95, "lambda of the Retrace value targets")
    value_target: str = _loss(
        "retrace",
        "value targets: 'retrace', or 'mc' (every trace 1: discounted returns, the seed's)",
        choices=(
            "retrace",
            "mc",
        ),
    )
    retrace_q: str = _loss(
        "v",
        "q terms of Retrace: 'v' (v(s) for both), 'model' (paper: the target's one-step q, E_prior q(s, .) and q(s, a_t)); common/retrace.py",
        choices=(
            "v",
            "model",
        ),
    )
    value_head_target: str = _loss(
        "return",
        "value head target: 'return' (G_t, an estimate of q(s_t, a_t)) or 'value' (V_t = E q + c_t (G_t - q_t), the state value consistent with Retrace)",
        choices=(
            "return",
            "value",
        ),
    )
    pg_normalizer: str = _loss(
        "own",
        "scale of the policy-gradient advantage G - v: 'own' running std, or 'shared' with the CMPO advantages q - v (paper)",
        choices=(
            "own",
            "shared",
        ),
    )
    policy_terms_every_state: bool = _loss(
        True,
        "L_pg, L_reg, k = 0 value loss on every valid state (paper); only the model unroll uses --starts-per-sequence",
    )
    cmpo_clip: float = _loss(
        1.0, "c: normalised advantages are clipped to [-c, c] in the CMPO policy"
    )
    reg_weight: float = _loss(
        1.0, "lambda_reg: weight of the CMPO regulariser (a loss weight, as in the paper)"
    )
    reg_samples: int = _loss(
        0, "actions sampled for the CMPO regulariser (0 = exact KL over all actions)"
    )
    value_weight: float = _loss(0.25, "weight of the value loss")
    value_loss_weighting: str = _loss(
        "pooled",
        "how the value loss weighs the unrolled steps k: 'pooled', one mean over the k = 0 terms "
        "of every state and the k >= 1 terms of the starts; 'per-start', the paper's sum over "
        "k = 0..K per start state, averaged over starts, / (K + 1)",
        choices=("pooled", "per-start"),
    )
    reward_weight: float = _loss(1.0, "weight of the reward loss")
    model_weight: float = _loss(1.0, "weight of the model's policy loss on the unrolled steps")
    pg_weight: float = _loss(1.0, "weight of the policy-gradient loss")
    adv_beta: float = _loss(0.99, "beta: decay of the advantage normalisers' moving second moment")
    prior_behaviour_weight: float = _loss(0.03, "share of the behaviour policy in the CMPO prior")
    prior_uniform_weight: float = _loss(0.003, "share of the uniform policy in the CMPO prior")
    eval_episodes: int = _stop(100, "greedy evaluation episodes (own env seeds)")
    eval_every_env_steps: int = _stop(2048, "env steps between evaluations")
    eval_screen_episodes: int = _stop(
        10, "a cheap first look; the full evaluation runs only if it reaches the bar"
    )
    sampled_eval_episodes: int = _stop(
        10, "at the end: sampled (not greedy) episodes of the exported policy"
    )
    eval_min_train_return: float = _stop(
        0.0, "skip evaluation while the recent training return is below this"
    )
    solve_return: float | None = _stop(
        None, "stop at this greedy eval mean (None = the env's reward_threshold)"
    )
    max_env_steps: int = _stop(2_000_000, "stop after this many env steps (all actors)")
    max_seconds: float = _stop(
        600.0, "stop after this many seconds of the run (counted on over --resume)"
    )
    checkpoint_every_s: float = _stop(60.0, "seconds between learner checkpoints")
    keep_checkpoints: int = _stop(3, "newest checkpoints kept; older ones are deleted")

    def __post_init__(self):
        validate(self)  # every Config, wherever it is built (flags, code, a saved config.json)

    def network_spec(self, info) -> NetworkSpec:
        """Architecture for an env described by common.envs.EnvInfo; ConfigError when --torso
        cannot take the env's observations."""
        torso = auto_torso(info.obs_shape) if self.torso == "auto" else self.torso
        problem = torso_problem(torso, info.obs_shape)
        if problem:
            raise ConfigError(
                f"--torso={self.torso!r} is invalid for --env={self.env!r} (observations "
                f"{tuple(info.obs_shape)} {info.obs_dtype}): {problem}"
            )
        hidden = self.hidden_size or max(1, int(info.obs_shape[0]) // 2)
        return NetworkSpec(
            tuple(info.obs_shape),
            info.num_actions,
            torso,
            self.width,
            self.depth,
            hidden,
            self.support_size,
        )

    def shard_min_size(self) -> int:
        """m of each replay shard: its share of max(min_replay, batch_size), rounded up."""
        return math.ceil(max(self.min_replay, self.batch_size) / self.num_replay_shards)

    def loss_params(self) -> LossParams:
        """The loss's view of this config: its fields of the same name, plus two derived ones."""
        derived = {
            "hidden_grad_scale": self.dynamics_grad_scale
            if self.dynamics_grad == "hidden"
            else 1.0,
            "max_starts": self.starts_per_sequence * self.batch_size,
        }  # the learner's random_start_mask
        names = {f.name for f in fields(LossParams)} - set(derived) - {"adv_eps"}
        return LossParams(**{name: getattr(self, name) for name in names}, **derived)


def choices() -> dict:
    """{field name: the words allowed} for the word-valued settings."""
    return {f.name: f.metadata["choices"] for f in fields(Config) if f.metadata["choices"]}


MAX_EVAL_EPISODES = (
    10_000  # 100x the default; an evaluation is not cut short by --max-seconds, so it must end
)


def validate(cfg: Config) -> Config:
    """Raise ConfigError naming the first bad field; return cfg unchanged otherwise."""

    def bad(name, allowed):
        raise ConfigError(
            f"--{name.replace('_', '-')}={getattr(cfg, name)!r} is invalid: {allowed}"
        )

    for name, allowed in choices().items():
        if getattr(cfg, name) not in allowed:
            bad(name, "allowed: " + ", ".join(allowed))
    for f in fields(cfg):  # NaN slips through every `x < 0` check below
        if isinstance(getattr(cfg, f.name), float) and math.isnan(getattr(cfg, f.name)):
            bad(f.name, "must be a number, not NaN")
    if cfg.seed < 0:
        bad("seed", "must be a whole number >= 0")
    if cfg.run_name and (
        os.path.isabs(cfg.run_name)
        or os.sep in cfg.run_name
        or "/" in cfg.run_name
        or cfg.run_name in (".", "..")
    ):
        bad(
            "run_name",
            "must be a plain folder name (no '/', not '.' or '..'); the run directory is "
            "created inside --run-root",
        )
    if cfg.num_actors < 0:
        bad(
            "num_actors",
            "must be a whole number >= 1, or 'auto' (0) to fill the cluster's free CPUs",
        )
    for name in (
        "num_replay_shards",
        "replay_error_buffer",
        "envs_per_actor",
        "actor_chunk_steps",
        "weight_pull_every",
        "sequence_length",
        "sequence_stride",
        "replay_capacity",
        "batch_size",
        "min_replay",
        "width",
        "depth",
        "publish_every",
        "eval_every_env_steps",
        "eval_episodes",
        "eval_screen_episodes",
        "sampled_eval_episodes",
        "keep_checkpoints",
        "torch_threads",
    ):
        if getattr(cfg, name) < 1:
            bad(name, "must be a whole number >= 1")
    for name in ("eval_episodes", "eval_screen_episodes", "sampled_eval_episodes"):
        if getattr(cfg, name) > MAX_EVAL_EPISODES:
            bad(
                name,
                f"must be <= {MAX_EVAL_EPISODES:,} (evaluations are not cut short by --max-seconds)",
            )
    for name in (
        "num_cpus",
        "hidden_size",
        "support_size",
        "unroll_steps",
        "reg_samples",
        "starts_per_sequence",
        "lr_decay_steps",
        "target_blend_every_steps",
        "max_env_steps",
        "metrics_export_port",
    ):
        if getattr(cfg, name) < 0:
            bad(name, "must be >= 0")
    for name in (
        "replay_fraction",
        "retrace_lambda",
        "adv_beta",
        "target_ema",
        "prior_behaviour_weight",
        "prior_uniform_weight",
    ):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad(name, "must lie in [0, 1]")
    if not 0.0 < cfg.discount <= 1.0:
        bad("discount", "must lie in (0, 1]")
    if not 0 < cfg.learning_rate < math.inf:
        bad("learning_rate", "must be > 0 and finite")
    for name in (
        "dynamics_grad_scale",
        "max_grad_norm",
        "grad_clip_value",
        "weight_decay",
        "cmpo_clip",
        "reg_weight",
        "value_weight",
        "reward_weight",
        "model_weight",
        "pg_weight",
        "replay_ratio",
        "max_seconds",
        "checkpoint_every_s",
    ):
        if getattr(cfg, name) < 0:
            bad(name, "must be >= 0")
    if (
        cfg.replay_ratio == math.inf
    ):  # a limit no insert can satisfy: actors and learner both wait forever
        bad("replay_ratio", "must be finite (0 = no limit)")
    if cfg.value_target == "mc" and cfg.retrace_q == "model":
        # every trace 1 with model q's is still Retrace, not the discounted returns mc promises
        bad(
            "retrace_q",
            "cannot be combined with --value-target='mc' (its targets are the "
            "discounted returns, which use no q); allowed: v",
        )
    if cfg.unroll_steps > cfg.sequence_length:
        bad(
            "unroll_steps",
            f"must be <= --sequence-length={cfg.sequence_length} (an unroll step "
            "past a sequence's end has no target)",
        )
    if cfg.prior_behaviour_weight + cfg.prior_uniform_weight > 1.0:
        bad("prior_behaviour_weight", "prior_behaviour_weight + prior_uniform_weight must be <= 1")
    if cfg.sequence_stride > cfg.sequence_length:
        bad("sequence_stride", f"must be <= --sequence-length={cfg.sequence_length}")
    if cfg.batch_size > cfg.replay_capacity:
        bad(
            "batch_size",
            f"must be <= --replay-capacity={cfg.replay_capacity} (a batch larger than replay never fills)",
        )
    if cfg.min_replay > cfg.replay_capacity:
        bad("min_replay", f"must be <= --replay-capacity={cfg.replay_capacity}")
    smallest_shard = cfg.replay_capacity // cfg.num_replay_shards
    if smallest_shard < cfg.shard_min_size():
        bad(
            "replay_capacity",
            f"must give each of the {cfg.num_replay_shards} shards room for its share of "
            f"max(--min-replay, --batch-size) = {max(cfg.min_replay, cfg.batch_size)}; the smallest shard holds "
            f"{smallest_shard}",
        )
    if cfg.num_replay_shards > cfg.batch_size:
        bad(
            "num_replay_shards",
            f"must be <= --batch-size={cfg.batch_size} (every shard serves part of a batch)",
        )
    if cfg.max_restarts < -1:
        bad("max_restarts", "must be >= 0, or -1 for no limit")
    if cfg.metrics_export_port > 65535:
        bad("metrics_export_port", "must be a TCP port in [0, 65535] (0 = Ray's default)")
    if cfg.in_process and cfg.address:
        bad("address", "cannot be combined with --in-process")
    return cfg


AUTO_FIELDS = ("num_actors",)  # int fields where 'auto' on the command line means 0


def _parse_value(kind, auto: bool = False):
    """argparse type for a field annotation: int, float, str, float | None, str | None;
    with `auto`, the word 'auto' parses to 0."""
    optional = kind in (float | None, str | None)
    base = float if kind == float | None else str if kind == str | None else kind

    def parse(text):
        if auto and text.lower() == "auto":
            return 0
        return None if optional and text.lower() == "none" else base(text)

    parse.__name__ = base.__name__  # argparse names it in "invalid int value: 'abc'"
    return parse


def _shown(value) -> str:
    """A default as it is typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return "none" if value is None else str(value)


HELP_EPILOG = """\
A preset sets some of these before the flags given apply: --preset lunarlander changes the
network, replay and budget (common/presets.py; why each value: docs/presets.md). Defaults
shown are those without a preset (the cartpole preset)."""


_METAVARS = {int: "N", float: "X", str: "TEXT", float | None: "X", str | None: "TEXT"}


def build_parser(prog: str = "launch.py") -> cli.OneLineParser:
    """One flag per Config field, grouped by section, each with its help, default and choices.
    Every default is None in the parsed namespace, so that a given flag can be told apart."""
    parser = cli.OneLineParser(
        prog=prog,
        usage=f"{prog} [--preset NAME] [--env ID] [--in-process] [--address ADDRESS] [--FLAG VALUE ...]",
        description="Train a Muesli agent on a gymnasium env, on local Ray, a Ray cluster or in "
        "one process.",
        epilog=HELP_EPILOG,
    )
    groups = {}
    for f in fields(Config):
        meta = f.metadata
        if meta["section"] not in groups:
            groups[meta["section"]] = parser.add_argument_group(
                meta["section"], SECTIONS[meta["section"]]
            )
        flag = "--" + f.name.replace("_", "-")
        default = f" (default: {_shown(f.default)})" if f.default != "" else ""
        text = (meta["help"] + default).replace("%", "%%")  # argparse formats help with %
        if f.type is bool:
            groups[meta["section"]].add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            choices = meta["choices"]
            groups[meta["section"]].add_argument(
                flag,
                type=_parse_value(f.type, f.name in AUTO_FIELDS),
                default=None,
                metavar="{" + ",".join(choices) + "}" if choices else _METAVARS[f.type],
                help=text,
            )
    return parser


def parse_config(argv=None) -> Config:
    """Defaults <- preset (or the config.json of --resume) <- command line; then validate."""
    try:
        args = build_parser().parse_args(argv)
    except cli.UsageError as exc:
        raise ConfigError(str(exc)) from None
    given = {k: v for k, v in vars(args).items() if v is not None}
    if given.get("resume"):
        cfg = Config(**{**saved_config(given["resume"]), **given})
    else:
        cfg = with_preset(given.pop("preset", "cartpole"), **given)
    return for_this_machine(cfg)  # validated as it was built (Config.__post_init__)


def with_preset(preset: str, **fields) -> Config:
    """The preset's settings, then `fields`. With an env other than the preset's, the preset's
    fields that only fit its own env (presets.ENV_BOUND) are dropped."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset={preset!r} is invalid: allowed: " + ", ".join(PRESETS))
    base = PRESETS[preset]
    if fields.get("env", base.get("env", Config.env)) != base.get("env", Config.env):
        base = {k: v for k, v in base.items() if k not in ENV_BOUND}
    return Config(**{**base, **fields, "preset": preset})


def for_this_machine(cfg: Config) -> Config:
    """cfg with --num-cpus 0 (all) made this machine's CPU count for a local Ray."""
    if cfg.num_cpus == 0 and cfg.address is None:
        return dataclasses.replace(cfg, num_cpus=os.cpu_count() or 1)
    return cfg


def saved_config(run_dir: str, flag: str = "--resume") -> dict:
    """The config.json of a run directory (for --resume, where flags given with it override it,
    and for evaluate.py); `flag` names the argument in the error message."""
    import json

    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{flag}={run_dir!r} is invalid: cannot read {path} ({type(exc).__name__}); "
            "allowed: a run directory written by launch.py"
        ) from None
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["<not a JSON object>"]
    if unknown:
        raise ConfigError(
            f"{flag}={run_dir!r} is invalid: {path} has unknown fields {unknown}; "
            "allowed: the fields of common/config.Config"
        )
    for f in fields(Config):
        if f.name in saved and not _json_value_fits(saved[f.name], f.type):
            raise ConfigError(
                f"{flag}={run_dir!r} is invalid: {path} field {f.name!r} is "
                f"{saved[f.name]!r} ({type(saved[f.name]).__name__}); allowed: {_type_name(f.type)}"
            )
    return saved


def _json_value_fits(value, kind) -> bool:
    """Whether a value read from config.json has the field's type (an int passes for a float;
    a bool, which JSON keeps apart, passes only for a bool)."""
    if value is None:
        return kind in (float | None, str | None)
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind in (float, float | None):
        return isinstance(value, (int, float))
    if kind in (str, str | None):
        return isinstance(value, str)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    names = {
        float: "a number",
        int: "a whole number",
        str: "a string",
        bool: "true or false",
        float | None: "a number or null",
        str | None: "a string or null",
    }
    return names[kind]


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
