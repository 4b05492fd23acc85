"""Self-play actor (actors/actor.py), in-process: a WeightStore/WeightPublisher as
driver/in_process.py builds them, and a ReplayShard behind a ReplayClient.

CartPole's Euler step (x' = x + tau * x_dot, theta' = theta + tau * theta_dot, tau = 0.02)
lets a test check, from a stored sequence alone, that obs[t + 1] is the observation that
followed obs[t], including the final observation stored at index L after an episode end."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from actors.actor import SelfPlayActor, SequenceCutter
from common import envs as envs_lib
from common.config import Config, validate
from common.networks import build_network
from common.sequence import SequenceSpec, decode_sequences
from replay.client import ReplayClient
from replay.rate_limit import SampleToInsertRatio
from tests.recording import RecordingShard
from transport.weight_store import WeightStore
from transport.weights import WeightClient, WeightPublisher

# time limit of the test env: a mix of terminations and truncations
MAX_STEPS = 20
ENV_ID = "MuesliTestCartPole20-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=CartPoleEnv, max_episode_steps=MAX_STEPS)
TAU, X_LIMIT, THETA_LIMIT = 0.02, 2.4, 12 * 2 * np.pi / 360


def small_config(**overrides) -> Config:
    base = dict(
        env=ENV_ID,
        envs_per_actor=3,
        sequence_length=MAX_STEPS + 4,
        sequence_stride=MAX_STEPS + 4,
        width=16,
        depth=1,
        hidden_size=8,
        support_size=0,
        replay_capacity=1000,
        batch_size=4,
        min_replay=4,
        weight_pull_every=1,
        num_cpus=1,
    )
    merged = {**base, **overrides}
    # the actor never unrolls; the default unroll must still fit a short sequence
    merged.setdefault("unroll_steps", min(Config.unroll_steps, merged["sequence_length"]))
    return validate(Config(**merged))


def build(
    cfg: Config,
    index: int = 0,
    version: int = 7,
    net_seed: int = 0,
    rate_limit=None,
    flush_every: int = 1,
):
    """Actor, its one (recording) shard with `rate_limit`, spec, publisher, and the published net."""
    info = envs_lib.describe(cfg.env)
    spec = SequenceSpec(cfg.sequence_length, info.obs_shape, info.obs_dtype, info.num_actions)
    torch.manual_seed(net_seed)
    net = build_network(cfg.network_spec(info)).eval()
    store = WeightStore()
    publisher = WeightPublisher(store)
    publisher.publish(version, net)
    shard = RecordingShard(spec, cfg.replay_capacity, rate_limit=rate_limit)
    actor = SelfPlayActor(
        cfg, index, spec, ReplayClient([shard], spec, flush_every=flush_every), WeightClient(store)
    )
    return actor, shard, spec, publisher, net


def sequences(shard, spec):
    """Every sequence the actor sent, in order (payloads stack N sequences each)."""
    out = []
    for payload in shard.payloads:
        rows = decode_sequences(payload, spec)
        out.extend(
            {name: array[i] for name, array in rows.items()} for i in range(len(rows["mask"]))
        )
    return out


def policy(net, obs):
    with torch.no_grad():
        return torch.softmax(net.policy_logits(torch.as_tensor(obs)), -1).numpy()


@pytest.fixture(scope="module")
def collected():
    cfg = small_config()
    actor, shard, spec, _, net = build(cfg, index=3)
    stats = actor.collect(3 * 150)
    return dict(
        cfg=cfg,
        actor=actor,
        shard=shard,
        spec=spec,
        net=net,
        stats=stats,
        seqs=sequences(shard, spec),
    )


# -- collected sequences -------------------------------------------------------------------


def test_collected_payloads_decode_and_are_all_accepted(collected):
    shard, stats, seqs = collected["shard"], collected["stats"], collected["seqs"]
    assert stats["sequences"] == len(shard.payloads) == len(seqs) > 10
    s = shard.stats()
    assert s.get("rejected", 0) == 0 and s["sequences"] == len(seqs)
    # no limit: never held
    assert stats["env_steps"] == stats["total_env_steps"] == 450 and stats["wait_s"] == 0.0
    for seq in seqs:
        assert seq["obs"].shape == (MAX_STEPS + 5, 4) and seq["obs"].dtype == np.float32
        assert seq["action"].shape == (MAX_STEPS + 4,) and seq["behaviour"].shape == (
            MAX_STEPS + 4,
            2,
        )


def test_one_sequence_per_episode_with_the_episode_length(collected):
    """T > time limit and stride = T, so every episode is exactly one padded sequence."""
    seqs, stats = collected["seqs"], collected["stats"]
    lengths = sorted(int(seq["mask"].sum()) for seq in seqs)
    assert lengths == sorted(stats["lengths"]) and len(seqs) == stats["episodes"]
    for seq in seqs:
        L = int(seq["mask"].sum())
        assert seq["mask"][:L].all() and not seq["mask"][L:].any()
        assert np.all(seq["reward"][:L] == 1.0) and np.all(seq["reward"][L:] == 0.0)
        assert sum(seq["reward"]) in stats["returns"]
        # nothing after the final observation
        assert not seq["obs"][L + 1 :].any()


def test_terminated_and_truncated_are_set_separately_and_correctly(collected):
    seen = {"terminated": 0, "truncated": 0, "both": 0}
    for seq in collected["seqs"]:
        L = int(seq["mask"].sum())
        term, trunc = seq["terminal"], seq["truncated"]
        assert (
            not term[: L - 1].any()
            and not trunc[: L - 1].any()
            and not term[L:].any()
            and not trunc[L:].any()
        )
        final = seq["obs"][L]
        fell = abs(final[0]) > X_LIMIT or abs(final[2]) > THETA_LIMIT
        # terminal iff the pole fell / cart left
        assert term[L - 1] == fell, (L, final)
        # truncated iff the time limit was hit
        assert trunc[L - 1] == (L == MAX_STEPS), L
        assert term[L - 1] or trunc[L - 1]
        seen["terminated"] += bool(term[L - 1] and not trunc[L - 1])
        seen["truncated"] += bool(trunc[L - 1] and not term[L - 1])
        seen["both"] += bool(term[L - 1] and trunc[L - 1])
    assert seen["terminated"] > 0 and seen["truncated"] > 0, seen


def test_observations_are_t_steps_plus_the_final_one_in_order(collected):
    for seq in collected["seqs"]:
        L = int(seq["mask"].sum())
        obs = seq["obs"].astype(np.float64)
        assert np.all(np.abs(obs[0]) <= 0.05 + 1e-7)  # CartPole's reset range
        np.testing.assert_allclose(obs[1 : L + 1, 0], obs[:L, 0] + TAU * obs[:L, 1], atol=1e-5)
        np.testing.assert_allclose(obs[1 : L + 1, 2], obs[:L, 2] + TAU * obs[:L, 3], atol=1e-5)


def test_behaviour_is_the_loaded_policy_at_each_observation(collected):
    net = collected["net"]
    for seq in collected["seqs"]:
        L = int(seq["mask"].sum())
        mu = seq["behaviour"][:L]
        assert np.all(mu > 0) and np.all(mu <= 1)
        np.testing.assert_allclose(mu.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(mu, policy(net, seq["obs"][:L]), atol=1e-6)
        assert np.all(mu[np.arange(L), seq["action"][:L]] > 0)
        assert not seq["behaviour"][L:].any() and not seq["action"][L:].any()


def test_version_tag_is_the_loaded_weights_version(collected):
    assert collected["actor"].version == 7 and collected["stats"]["version"] == 7
    for seq in collected["seqs"]:
        L = int(seq["mask"].sum())
        assert np.all(seq["version"][:L] == 7) and np.all(seq["version"][L:] == 0)


def test_new_weights_are_picked_up_and_tag_the_steps_they_chose():
    cfg = small_config(envs_per_actor=2, sequence_length=6, sequence_stride=3)
    actor, shard, spec, publisher, old_net = build(cfg, version=7)
    actor.collect(2 * 20)
    torch.manual_seed(123)
    new_net = build_network(cfg.network_spec(envs_lib.describe(cfg.env))).eval()
    publisher.publish(9, new_net)
    publisher.publish(8, old_net)  # an older version is never loaded
    actor.collect(2 * 40)
    assert actor.version == 9
    nets = {7: old_net, 9: new_net}
    counts = {7: 0, 9: 0}
    for seq in sequences(shard, spec):
        for t in np.flatnonzero(seq["mask"]):
            v = int(seq["version"][t])
            counts[v] += 1
            np.testing.assert_allclose(
                seq["behaviour"][t], policy(nets[v], seq["obs"][t : t + 1])[0], atol=1e-6
            )
    assert counts[7] > 0 and counts[9] > 0


# -- seeds and naming ----------------------------------------------------------------------


def test_actor_seeds_differ_by_index_and_are_deterministic():
    seeds = [envs_lib.derive_seed(0, "actor", i) for i in range(8)]
    assert len(set(seeds)) == 8 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [envs_lib.derive_seed(0, "actor", i) for i in range(8)]
    assert (
        envs_lib.derive_seed(1, "actor", 0) != seeds[0]
        and envs_lib.derive_seed(0, "eval", 0) != seeds[0]
    )


def test_same_index_replays_identically_and_another_index_differs():
    cfg = small_config(envs_per_actor=2, sequence_length=5, sequence_stride=2)
    runs = {}
    for name, index in (("a", 3), ("b", 3), ("c", 4)):
        actor, shard, _, _, _ = build(cfg, index=index)
        actor.collect(2 * 30)
        runs[name] = shard.payloads
    assert runs["a"] == runs["b"] and len(runs["a"]) > 5
    assert runs["a"] != runs["c"]


def test_repr_names_the_actor(collected):
    assert repr(collected["actor"]) == "SelfPlayActor(3)"


# -- SequenceCutter on hand-built input ----------------------------------------------------

CUT_SPEC = SequenceSpec(length=4, obs_shape=(1,), obs_dtype="float32", num_actions=2)


def step(
    cutter, k, terminal=(False, False), truncated=(False, False), next_obs=None, final_obs=None
):
    """Vector step k of two envs: env j observes 10 * j + k, action k % 2, reward k, version k."""
    nxt = (
        np.array([[k], [10 + k]], np.float32)
        if next_obs is None
        else np.array(next_obs, np.float32)[:, None]
    )
    fin = nxt if final_obs is None else np.array(final_obs, np.float32)[:, None]
    return cutter.add(
        np.array([k % 2] * 2),
        np.array([k, k], np.float32),
        np.full((2, 2), 0.5, np.float32),
        np.array(terminal),
        np.array(truncated),
        k,
        nxt,
        fin,
    )


def flat(seq):
    return {
        "obs": seq["obs"][:, 0].tolist(),
        "reward": seq["reward"].tolist(),
        "mask": seq["mask"].tolist(),
        "terminal": seq["terminal"].tolist(),
        "truncated": seq["truncated"].tolist(),
        "version": seq["version"].tolist(),
        "action": seq["action"].tolist(),
    }


def test_cutter_emits_overlapping_sequences_stride_apart():
    cutter = SequenceCutter(CUT_SPEC, 2, stride=2, first_obs=np.array([[0], [10]], np.float32))
    for k in (1, 2, 3):
        assert step(cutter, k) == []
    out = step(cutter, 4)
    assert [flat(s)["obs"] for s in out] == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    assert flat(out[0]) == {
        "obs": [0, 1, 2, 3, 4],
        "reward": [1, 2, 3, 4],
        "mask": [True] * 4,
        "terminal": [False] * 4,
        "truncated": [False] * 4,
        "version": [1, 2, 3, 4],
        "action": [1, 0, 1, 0],
    }
    assert step(cutter, 5) == []
    # starts 2 steps after the previous one
    out = step(cutter, 6)
    assert flat(out[0])["obs"] == [2, 3, 4, 5, 6] and flat(out[0])["reward"] == [3, 4, 5, 6]
    assert flat(out[1])["obs"] == [12, 13, 14, 15, 16] and flat(out[1])["version"] == [3, 4, 5, 6]
    # Emitted sequences are copies: later steps do not change them.
    step(cutter, 7)
    assert flat(out[0])["obs"] == [2, 3, 4, 5, 6]


def test_cutter_pads_an_episode_end_and_stores_the_final_observation():
    cutter = SequenceCutter(CUT_SPEC, 2, stride=2, first_obs=np.array([[0], [10]], np.float32))
    for k in (1, 2, 3, 4, 5, 6):
        step(cutter, k)
    # Step 7: env 1 terminates; its final observation is 99, the reset observation 500.
    out = step(cutter, 7, terminal=(False, True), next_obs=[7, 500], final_obs=[7, 99])
    assert len(out) == 1
    assert flat(out[0]) == {
        "obs": [14, 15, 16, 99, 0],
        "reward": [5, 6, 7, 0],
        "mask": [True, True, True, False],
        "terminal": [False, False, True, False],
        "truncated": [False] * 4,
        "version": [5, 6, 7, 0],
        "action": [1, 0, 1, 0],
    }
    # Step 8: env 0 emits its regular sequence; env 1 restarted from the reset observation.
    out = step(cutter, 8, next_obs=[8, 501])
    assert [flat(s)["obs"] for s in out] == [[4, 5, 6, 7, 8]]
    # Step 9: env 0 hits a time limit 3 steps into its sequence: truncated, not terminal.
    out = step(cutter, 9, truncated=(True, False), next_obs=[600, 502], final_obs=[77, 502])
    assert flat(out[0]) == {
        "obs": [6, 7, 8, 77, 0],
        "reward": [7, 8, 9, 0],
        "mask": [True, True, True, False],
        "terminal": [False] * 4,
        "truncated": [False, False, True, False],
        "version": [7, 8, 9, 0],
        "action": [1, 0, 1, 0],
    }
    # Steps 10, 11: env 1 ends exactly when its buffer is full: one sequence, not two.
    assert step(cutter, 10, next_obs=[601, 503]) == []
    out = step(cutter, 11, terminal=(False, True), next_obs=[602, 700], final_obs=[602, 98])
    assert len(out) == 1
    assert flat(out[0]) == {
        "obs": [500, 501, 502, 503, 98],
        "reward": [8, 9, 10, 11],
        "mask": [True] * 4,
        "terminal": [False, False, False, True],
        "truncated": [False] * 4,
        "version": [8, 9, 10, 11],
        "action": [0, 1, 0, 1],
    }
    assert cutter.fill.tolist() == [2, 0] and cutter.buf["obs"][:, 0, 0].tolist() == [600, 700]
    assert not cutter.buf["mask"][1].any()


def test_cutter_with_stride_equal_to_length_chains_without_overlap():
    spec = SequenceSpec(length=3, obs_shape=(1,), obs_dtype="float32", num_actions=2)
    cutter = SequenceCutter(spec, 2, stride=3, first_obs=np.array([[0], [10]], np.float32))
    out = []
    for k in range(1, 7):
        out += step(cutter, k)
    env0 = [flat(s)["obs"] for s in out if s["obs"][0, 0] < 10]
    assert env0 == [[0, 1, 2, 3], [3, 4, 5, 6]]  # the bootstrap obs starts the next one
    assert len(out) == 4


# -- rate limit (replay/rate_limit.py, enforced by the shard) --------------------------------
# One env (envs_per_actor=1) and sequences longer than the time limit, so every episode is one
# sequence and a vector step completes at most one. Limit r = 1, m = 2, e = 1: room = 3 - I + S.


def limited(flush_every: int):
    cfg = small_config(envs_per_actor=1)
    return build(
        cfg, version=0, rate_limit=SampleToInsertRatio(1.0, 2, 1.0), flush_every=flush_every
    )


def count_waits(client) -> list:
    """Wrap client.wait_for_room: records each call's answer; a held in-process collect that asks
    more than a few times in one go is looping instead of returning."""
    answers, original = [], client.wait_for_room

    def wait_for_room(timeout_s):
        answers.append(original(timeout_s))
        if len(answers) > 20:
            raise RuntimeError("collect keeps waiting for room in-process instead of returning")
        return answers[-1]

    client.wait_for_room = wait_for_room
    return answers


def test_collect_stops_right_after_the_step_that_used_up_the_room():
    actor, shard, spec, _, _ = limited(flush_every=1)
    waits = count_waits(actor.replay)
    stats = actor.collect(10_000)
    # one look, then it returns
    assert waits == [False]
    seqs = sequences(shard, spec)
    # room 3, one sequence per flush
    assert stats["episodes"] == stats["sequences"] == len(seqs) == 3
    assert (
        stats["env_steps"]
        == sum(stats["lengths"])
        == sum(int(s["mask"].sum()) for s in seqs)
        < 10_000
    )
    assert shard.room() == 0.0 and shard.rate_limit.inserts == 3
    again = actor.collect(10_000)  # held: not one step
    assert (again["env_steps"], again["sequences"], shard.rate_limit.inserts) == (0, 0, 3)
    assert waits == [False, False]
    assert actor.env_steps == stats["env_steps"]


def test_collect_overshoots_the_room_by_at_most_one_flush():
    """The client learns the room from each flush's answer: with 2 sequences per flush, room 3
    lets two flushes out (room 1 after the first) and the 4th sequence is the overshoot."""
    actor, shard, spec, _, _ = limited(flush_every=2)
    stats = actor.collect(10_000)
    assert stats["sequences"] == len(sequences(shard, spec)) == 4 and len(shard.payloads) == 2
    assert stats["env_steps"] == sum(stats["lengths"]) and len(stats["lengths"]) == 4
    assert shard.room() == -1.0


def test_collect_goes_on_once_the_learner_has_sampled_and_pulls_new_weights():
    actor, shard, spec, publisher, net = limited(flush_every=2)
    actor.collect(10_000)  # 4 inserted: diff 4, room -1
    # 4 - 2 >= 2 - 1: S = 2, room 3 - 4 + 2 = 1
    assert shard.sample(1, 1) is not None
    assert shard.sample(1, 1) is None  # 2 - 2 < 1
    publisher.publish(5, net)
    stats = actor.collect(10_000)
    # one more flush, then held
    assert stats["sequences"] == 2 and shard.rate_limit.inserts == 6
    assert actor.version == 5 and stats["version"] == 5
    assert len(stats["lengths"]) == 2 and stats["env_steps"] == sum(stats["lengths"])


def test_collect_asks_for_fewer_steps_than_the_room_allows_and_stops_there():
    actor, shard, _, _, _ = limited(flush_every=1)
    stats = actor.collect(5)
    assert stats["env_steps"] == 5 and shard.rate_limit.inserts <= 1
