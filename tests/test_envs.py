"""Env factory (common/envs.py), torso selection and the beyond-CartPole presets.

Each preset builds its env and network, a SelfPlayActor runs a few steps in-process (wired
as driver/wiring.Components does in-process) and the learner takes a few steps on what
it collected. Image observations go through the codec, replay and the learner's batch as
uint8. Spaces the system cannot handle give a one-line EnvError naming the space.

The presets' env packages are optional (requirements-envs.txt); a preset whose package is
missing is skipped with the package named.
"""

import importlib.util
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from actors.actor import SelfPlayActor
from common import envs as envs_lib
from common.config import PRESETS, Config, ConfigError, parse_config, validate
from common.networks import auto_torso, build_network
from common.sequence import SequenceSpec, decode_sequences
from common.vector_env import VectorEnv
from learner.batch import to_time_major
from learner.learner import Learner
from replay.client import ReplayClient
from replay.stream import BatchStream
from tests.recording import RecordingShard
from transport.weight_store import WeightStore
from transport.weights import WeightClient, WeightPublisher

# preset -> (modules it needs, pip name, expected obs shape, obs dtype, actions, torso)
PRESET_ENVS = {
    "lunarlander": (("Box2D", "pygame"), "box2d pygame-ce", (8,), "float32", 4, "mlp"),
    "minatar-breakout": (("minatar",), "minatar", (10, 10, 4), "uint8", 3, "minatar"),
    "minatar-space-invaders": (("minatar",), "minatar", (10, 10, 6), "uint8", 4, "minatar"),
    "minatar-asterix": (("minatar",), "minatar", (10, 10, 4), "uint8", 5, "minatar"),
    "atari-pong": (
        ("ale_py", "cv2"),
        "ale-py opencv-python-headless",
        (4, 84, 84),
        "uint8",
        18,
        "atari",
    ),
}


def needs(preset: str):
    modules, pip_name = PRESET_ENVS[preset][:2]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"preset {preset!r} needs {pip_name} "
        f"(pip install -r requirements-envs.txt); missing modules: {missing}",
    )


PRESET_PARAMS = [pytest.param(name, marks=needs(name), id=name) for name in PRESET_ENVS]


# -- test envs with chosen spaces -------------------------------------------------------------


class SpacesEnv(gym.Env):
    """Observations sampled from `observation_space`; 5-step episodes; checks every action."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return self.observation_space.sample(), 1.0, self.t >= 5, False, {}


TEST_SPACES = {
    "Dict": (
        spaces.Dict({"a": spaces.Box(-1, 1, (3,)), "b": spaces.Discrete(2)}),
        spaces.Discrete(2),
    ),
    "Tuple": (spaces.Tuple((spaces.Discrete(3), spaces.Discrete(2))), spaces.Discrete(2)),
    "BoxActions": (spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,))),
    "MultiDiscreteActions": (spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3])),
    "DiscreteObs": (spaces.Discrete(5), spaces.Discrete(3, start=-1)),
    "BoolGrid": (spaces.Box(0, 1, (6, 6, 2), bool), spaces.Discrete(2)),
    "GreyImage": (spaces.Box(0, 255, (40, 48), np.uint8), spaces.Discrete(2)),
    "Float64": (spaces.Box(-1, 1, (2, 3), np.float64), spaces.Discrete(2)),
}
for _name, (_obs, _act) in TEST_SPACES.items():
    if f"MuesliTest{_name}-v0" not in gym.registry:
        gym.register(
            f"MuesliTest{_name}-v0",
            entry_point=SpacesEnv,
            kwargs=dict(observation_space=_obs, action_space=_act),
        )


def assert_one_line(message: str, *parts: str) -> None:
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


# -- unsupported spaces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, parts",
    [
        ("MuesliTestDict-v0", ["observation space Dict(", "allowed: Box"]),
        ("MuesliTestTuple-v0", ["observation space Tuple(", "allowed: Box"]),
        (
            "MuesliTestBoxActions-v0",
            ["continuous action space Box(shape=(2,), dtype=float32)", "allowed: Discrete"],
        ),
        (
            "MuesliTestMultiDiscreteActions-v0",
            ["action space MultiDiscrete([2 3])", "allowed: Discrete"],
        ),
        (
            "Pendulum-v1",
            ["continuous action space Box(shape=(1,), dtype=float32)", "allowed: Discrete"],
        ),
        ("NoSuchEnv-v0", ["--env='NoSuchEnv-v0' cannot be made", "doesn't exist"]),
    ],
)
def test_unsupported_spaces_and_ids_give_one_line_env_errors(env_id, parts):
    for build in (envs_lib.describe, lambda e: VectorEnv(e, 2).reset(seed=0)):
        with pytest.raises(envs_lib.EnvError) as excinfo:
            build(env_id)
        assert_one_line(str(excinfo.value), f"--env={env_id!r}", *parts)


def test_launch_refuses_an_unsupported_env_with_exit_code_2(capsys):
    import launch

    assert launch.main(["--env", "Pendulum-v1", "--in-process"]) == 2
    err = capsys.readouterr().err.strip()
    assert_one_line(
        err,
        "launch.py: error: --env='Pendulum-v1' has continuous action space Box(shape=(1,)",
        "allowed: Discrete",
    )


def test_missing_env_package_is_named(monkeypatch):
    monkeypatch.setitem(
        envs_lib.OPTIONAL_ENV_PACKAGES, "NoPkg", ("muesli_no_such_module", "no-such-pkg")
    )
    with pytest.raises(envs_lib.EnvError) as excinfo:
        envs_lib.describe("NoPkg/Game-v0")
    assert_one_line(
        str(excinfo.value),
        "'NoPkg/Game-v0' needs the package 'no-such-pkg'",
        "requirements-envs.txt",
    )


# -- observation conversion and torso selection ---------------------------------------------


def test_discrete_observations_become_one_hot_and_actions_shift_by_start():
    info = envs_lib.describe("MuesliTestDiscreteObs-v0")
    assert (info.obs_shape, info.obs_dtype, info.num_actions) == ((5,), "float32", 3)
    envs = VectorEnv("MuesliTestDiscreteObs-v0", 2)
    obs = envs.reset(seed=0)
    assert obs.dtype == np.float32 and np.all(obs.sum(-1) == 1.0)
    # SpacesEnv asserts the shifted action is in Discrete(3, start=-1)
    for action in range(3):
        obs, *_ = envs.step(np.full(2, action))
    envs.close()


def test_bool_grids_become_uint8_0_255_and_grey_images_gain_a_channel():
    info = envs_lib.describe("MuesliTestBoolGrid-v0")
    assert (info.obs_shape, info.obs_dtype) == ((6, 6, 2), "uint8")
    raw, env = gym.make("MuesliTestBoolGrid-v0"), envs_lib.make_env("MuesliTestBoolGrid-v0")
    np.testing.assert_array_equal(env.reset(seed=3)[0], raw.reset(seed=3)[0].astype(np.uint8) * 255)
    grey = envs_lib.describe("MuesliTestGreyImage-v0")
    assert (grey.obs_shape, grey.obs_dtype) == ((40, 48, 1), "uint8")
    floats = VectorEnv("MuesliTestFloat64-v0", 2)
    assert envs_lib.describe("MuesliTestFloat64-v0").obs_dtype == "float32"
    assert floats.reset(seed=0).dtype == np.float32


@pytest.mark.parametrize(
    "shape, torso",
    [
        ((4,), "mlp"),
        ((2, 3), "mlp"),
        ((10, 10, 4), "minatar"),
        ((6, 6, 2), "minatar"),
        ((40, 48, 1), "atari"),
        ((4, 84, 84), "atari"),
        ((84, 84, 4), "atari"),
        ((3, 210, 160), "atari"),
        ((2, 2, 2, 2), "mlp"),
    ],
)
def test_auto_torso(shape, torso):
    assert auto_torso(shape) == torso
    info = envs_lib.EnvInfo(shape, "uint8", 3, None)
    net = build_network(Config(env="x").network_spec(info))
    obs = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
    assert net.policy_logits(obs).shape == (2, 3)


def test_torso_override():
    image = envs_lib.EnvInfo((10, 10, 4), "uint8", 3, None)
    vector = envs_lib.EnvInfo((8,), "float32", 4, None)
    # an MLP on images works (uint8 scaled by 1/255 before the torso, as for conv torsos)
    net = build_network(Config(env="x", torso="mlp").network_spec(image))
    obs = torch.randint(0, 2, (3, 10, 10, 4), dtype=torch.uint8) * 255
    torch.testing.assert_close(net.policy_logits(obs), net.policy_logits(obs.float() / 255.0))
    for torso, info, part in [
        ("atari", image, "at least 36x36"),
        ("minatar", vector, "needs images"),
        ("atari", vector, "needs images"),
    ]:
        with pytest.raises(ConfigError) as excinfo:
            Config(env="x", torso=torso).network_spec(info)
        assert_one_line(str(excinfo.value), f"--torso={torso!r} is invalid for --env='x'", part)


# -- presets -----------------------------------------------------------------------------------


def test_every_preset_with_an_env_of_its_own_is_tested_here():
    """A new preset must get a PRESET_ENVS row, so that the tests below build and step it."""
    assert set(PRESET_ENVS) == {name for name, fields in PRESETS.items() if "env" in fields}


@pytest.mark.parametrize("preset", list(PRESET_ENVS))
def test_presets_parse_and_validate(preset):
    cfg = parse_config(["--preset", preset])
    assert cfg.preset == preset and cfg.env == PRESETS[preset]["env"]
    assert cfg.sequence_stride <= cfg.sequence_length and cfg.unroll_steps <= cfg.sequence_length
    if preset == "lunarlander":
        assert cfg.env == "LunarLander-v3" and cfg.solve_return == 200.0


def small(preset: str, **overrides) -> Config:
    """The preset's env and network, with tiny data sizes and no rate limit (build's shard has none)."""
    base = dict(
        PRESETS[preset],
        preset=preset,
        envs_per_actor=2,
        sequence_length=6,
        sequence_stride=3,
        batch_size=4,
        min_replay=4,
        replay_capacity=64,
        unroll_steps=3,
        weight_pull_every=1,
        replay_ratio=0.0,
        publish_every=1,
        device="cpu",
        torch_threads=1,
        num_cpus=1,
    )
    return validate(Config(**{**base, **overrides}))


def build(cfg: Config):
    """Weight store, one shard, learner and actor as driver/wiring.Components wires them in-process."""
    info = envs_lib.describe(cfg.env)
    spec = SequenceSpec(cfg.sequence_length, info.obs_shape, info.obs_dtype, info.num_actions)
    store = WeightStore()
    shard = RecordingShard(spec, cfg.replay_capacity)
    torch.manual_seed(0)
    batches = BatchStream(ReplayClient([shard], spec), cfg.batch_size, cfg.replay_fraction)
    learner = Learner(cfg, spec, batches, WeightPublisher(store))
    actor = SelfPlayActor(
        cfg, 0, spec, ReplayClient([shard], spec, flush_every=1), WeightClient(store)
    )
    return info, spec, shard, learner, actor


@pytest.fixture(scope="module", params=PRESET_PARAMS)
def preset_run(request):
    preset = request.param
    cfg = small(preset)
    info, spec, shard, learner, actor = build(cfg)
    first = actor.collect(40)
    metrics = learner.train(3, wait_s=0.0)
    # acts with the weights published by those steps
    second = actor.collect(10)
    yield dict(
        preset=preset,
        cfg=cfg,
        info=info,
        spec=spec,
        shard=shard,
        learner=learner,
        actor=actor,
        first=first,
        second=second,
        metrics=metrics,
    )
    actor.envs.close()


def test_preset_builds_its_env_and_network(preset_run):
    _, _, shape, dtype, actions, torso = PRESET_ENVS[preset_run["preset"]]
    info, cfg = preset_run["info"], preset_run["cfg"]
    assert (info.obs_shape, info.obs_dtype, info.num_actions) == (shape, dtype, actions)
    assert cfg.network_spec(info).torso == torso
    assert preset_run["learner"].online.spec.torso == torso
    obs = preset_run["actor"].obs
    assert obs.shape == (cfg.envs_per_actor, *shape) and obs.dtype == np.dtype(dtype)


def test_preset_actor_and_learner_steps(preset_run):
    first, second, metrics = preset_run["first"], preset_run["second"], preset_run["metrics"]
    assert first["env_steps"] == 40 and first["sequences"] >= 4 and first["version"] == 0
    assert preset_run["shard"].stats().get("rejected", 0) == 0
    assert metrics["learner/updates_in_call"] == 3 and preset_run["learner"].steps == 3
    losses = {k: v for k, v in metrics.items() if k.startswith("loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    assert second["version"] == 3  # the actor pulled the published weights


def test_preset_sequences_round_trip_with_the_env_dtype(preset_run):
    """Image observations travel as uint8 from the env to the learner's batch: in the encoded
    payload, in replay and in the time-major batch handed to the loss."""
    spec, shard, info = preset_run["spec"], preset_run["shard"], preset_run["info"]
    dtype = np.dtype(info.obs_dtype)
    obs_bytes = (spec.length + 1) * math.prod(info.obs_shape) * dtype.itemsize  # per sequence
    assert shard.payloads
    for payload in shard.payloads:  # each payload stacks N sequences [N, ...]
        seqs = decode_sequences(payload, spec)
        n = len(seqs["mask"])
        assert seqs["obs"].dtype == dtype and seqs["obs"].shape == (
            n,
            spec.length + 1,
            *info.obs_shape,
        )
        # raw bytes of that dtype, no float copy
        assert n * obs_bytes < len(payload) < n * (obs_bytes + 1024) + 512
    client = ReplayClient([shard], spec)
    batch = client.result(client.request(4, 0.5))
    assert batch["obs"].dtype == dtype
    assert to_time_major(batch)["obs"].dtype == (
        torch.uint8 if dtype == np.uint8 else torch.float32
    )


@needs("minatar-breakout")
def test_minatar_observations_are_the_game_state_times_255():
    raw = gym.make("MinAtar/Breakout-v1")
    env = envs_lib.make_env("MinAtar/Breakout-v1")
    a, b = raw.reset(seed=5)[0], env.reset(seed=5)[0]
    for action in [0, 1, 2, 1, 1, 0]:
        assert a.dtype == np.bool_ and b.dtype == np.uint8 and set(np.unique(b)) <= {0, 255}
        np.testing.assert_array_equal(b, a.astype(np.uint8) * 255)
        a, b = raw.step(action)[0], env.step(action)[0]
    raw.close()
    env.close()


@needs("atari-pong")
def test_atari_env_is_the_papers_setting():
    env = envs_lib.make_env("ALE/Pong-v5")
    base = env.unwrapped
    # frame skip in the wrapper
    assert base._frameskip == 1 and env.action_space.n == len(base._action_set) == 18
    assert base.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[0], obs[3])  # a reset repeats its first frame
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[:3], np.repeat(obs[:1], 3, 0))
    env.close()
