"""The Python API (muesli_ray.py): train from a Config and get the summary back; load a run's
policy as a callable."""

import json

import numpy as np
import pytest
import torch

import muesli_ray
from muesli_ray import Config, ConfigError, load_policy, train, with_preset

SHORT = dict(
    in_process=True,
    max_env_steps=2048,
    eval_every_env_steps=1024,
    eval_episodes=3,
    eval_screen_episodes=3,
    sampled_eval_episodes=2,
    min_replay=8,
    batch_size=8,
    replay_capacity=200,
    solve_return=1e9,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return train(Config(run_root=str(root), run_name="run", seed=3, **SHORT))


def test_train_returns_the_summary_it_wrote(trained):
    written = json.loads((muesli_ray.Path(trained["run_dir"]) / "summary.json").read_text())
    assert trained == written and trained["solved"] is False
    assert trained["stop_reason"] == "env step budget spent" and trained["env_steps"] >= 2048
    assert trained["seed"] == 3 and trained["env"] == "CartPole-v1"


def test_bad_settings_raise_before_anything_is_written(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^--batch-size=0 is invalid: must be a whole number >= 1$"
    ):
        train(Config(run_root=str(tmp_path / "runs"), **{**SHORT, "batch_size": 0}))
    assert not (tmp_path / "runs").exists()


def test_with_preset_applies_the_preset_then_the_fields():
    cfg = with_preset("lunarlander", seed=7, width=32)
    assert (cfg.preset, cfg.env, cfg.seed, cfg.width, cfg.replay_ratio) == (
        "lunarlander", "LunarLander-v3", 7, 32, 6.4,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--preset='nope' is invalid: allowed: cartpole, seed"):
        with_preset("nope")


def test_the_loaded_policy_acts_as_the_exported_program(trained):
    program = torch.export.load(muesli_ray.Path(trained["run_dir"]) / "policy.pt2").module()
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    expected = program(torch.from_numpy(observations)).argmax(-1).numpy()
    policy = load_policy(trained["run_dir"])
    assert [policy(obs) for obs in observations] == expected.tolist()
    assert all(type(policy(obs)) is int for obs in observations[:2])
    assert np.array_equal(policy(observations), expected)


def test_a_sampled_policy_draws_from_the_action_distribution(trained):
    policy = load_policy(trained["run_dir"], greedy=False, seed=1)
    candidates = np.random.default_rng(0).normal(scale=2.0, size=(512, 4)).astype(np.float32)
    all_probs = torch.softmax(torch.from_numpy(policy.logits(candidates)), -1).numpy()
    mixed = int(np.abs(all_probs[:, 0] - 0.5).argmin())  # a state where both actions are likely
    obs, probs = candidates[mixed], all_probs[mixed]
    assert probs.min() > 0.2, probs
    draws = np.bincount([policy(obs) for _ in range(4000)], minlength=2) / 4000
    assert np.abs(draws - probs).max() < 0.03, (draws, probs)
    same_seed = [load_policy(trained["run_dir"], greedy=False, seed=1) for _ in range(2)]
    assert [same_seed[0](obs) for _ in range(50)] == [same_seed[1](obs) for _ in range(50)]
