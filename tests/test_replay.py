"""Replay shard (replay/shard.py) and client (replay/client.py), in-process, no Ray.

Every stored sequence carries its insert number in reward[0] and version[:], so a
test can read off exactly which sequences a shard holds and serves."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import CodecError
from common.sequence import (
    SequenceSpec,
    decode_batch,
    decode_sequences,
    encode_sequence,
    encode_sequences,
)
from common.split import split
from replay.client import ReplayClient
from replay.rate_limit import SampleToInsertRatio
from replay.shard import ReplayShard

INF = float("inf")

T, A = 4, 2
SPEC = SequenceSpec(length=T, obs_shape=(3,), obs_dtype="float32", num_actions=A)


def make_sequence(ident: int, length: int = T) -> dict:
    seq = SPEC.empty()
    seq["obs"][:] = ident + np.arange(T + 1, dtype=np.float32)[:, None] / 10
    seq["action"][:] = ident % A
    seq["reward"][:] = [ident, 1, 2, 3]
    seq["behaviour"][:] = 1.0 / A
    seq["mask"][:length] = True
    seq["terminal"][length - 1] = length < T
    seq["version"][:] = ident
    return seq


def payload(ident: int) -> bytes:
    return encode_sequence(make_sequence(ident))


def bad_payloads():
    nan = make_sequence(900)
    nan["reward"][1] = np.nan
    out_of_range = make_sequence(901)
    out_of_range["action"][0] = A
    good = payload(902)
    return [good[:-7], encode_sequence(nan), encode_sequence(out_of_range), b"junk", good + b"\x00"]


def ids(arrays) -> list:
    return [int(r) for r in arrays["reward"][:, 0]]


def stored_ids(shard) -> list:
    """Insert numbers per slot, -1 for empty slots."""
    return [
        int(r) if m else -1
        for r, m in zip(shard.storage["reward"][:, 0], shard.storage["mask"][:, 0])
    ]


# -- shard: storage ------------------------------------------------------------------------


def test_insert_stores_exact_sequences_in_slot_order():
    shard = ReplayShard(SPEC, capacity=5)
    assert shard.insert([payload(i) for i in range(3)]) == {
        "accepted": 3,
        "rejected": 0,
        "room": INF,
    }
    assert shard.size == 3 and stored_ids(shard) == [0, 1, 2, -1, -1]
    for slot in range(3):
        for name, array in make_sequence(slot).items():
            assert np.array_equal(shard.storage[name][slot], array), (slot, name)


def test_fifo_eviction_overwrites_the_oldest_and_counts():
    shard = ReplayShard(SPEC, capacity=3)
    for i in range(3):
        shard.insert([payload(i)])
    stats = shard.stats()
    assert stats["size"] == 3 and stats.get("evictions", 0) == 0 and stats["sequences"] == 3
    shard.insert([payload(3), payload(4)])
    assert stored_ids(shard) == [3, 4, 2]  # 0 then 1 overwritten, 2 is now the oldest
    shard.insert([payload(5), payload(6), payload(7)])
    assert stored_ids(shard) == [6, 7, 5]
    stats = shard.stats()
    assert stats["size"] == 3 and stats["sequences"] == 8 and stats["evictions"] == 5
    assert list(shard.insert_id) == [6, 7, 5]


# -- shard: rejection ----------------------------------------------------------------------


def test_rejected_payloads_are_counted_and_never_stored():
    shard = ReplayShard(SPEC, capacity=4)
    bad = bad_payloads()
    result = shard.insert([payload(0), bad[0], bad[1], payload(1), *bad[2:]])
    assert result == {"accepted": 2, "rejected": len(bad), "room": INF}
    assert shard.size == 2 and stored_ids(shard) == [0, 1, -1, -1]
    assert shard.stats()["rejected"] == len(bad) and shard.stats()["sequences"] == 2
    assert len(shard.fresh) == 2


def test_rejected_payloads_leave_a_full_shard_bit_identical():
    shard = ReplayShard(SPEC, capacity=3)
    shard.insert([payload(i) for i in range(5)])
    before = {name: array.copy() for name, array in shard.storage.items()}
    counters = (
        shard.size,
        shard.inserts,
        list(shard.fresh),
        shard.insert_id.copy(),
        shard.stats()["evictions"],
    )
    shard.insert(bad_payloads())
    for name, array in before.items():
        assert array.tobytes() == shard.storage[name].tobytes(), name
    assert (shard.size, shard.inserts, list(shard.fresh), shard.stats()["evictions"]) == (
        counters[0],
        counters[1],
        counters[2],
        counters[4],
    )
    assert np.array_equal(shard.insert_id, counters[3])
    assert shard.stats()["rejected"] == len(bad_payloads())


def test_a_payload_with_a_non_finite_array_is_rejected_for_that_reason():
    shard = ReplayShard(SPEC, capacity=2)
    bad = make_sequence(0)
    bad["behaviour"][0, 0] = np.inf
    assert shard.insert([encode_sequence(bad)])["rejected"] == 1 and shard.size == 0
    # the shard's own check: what it rejects the payload for
    with pytest.raises(CodecError, match=r"'behaviour' contains NaN or inf"):
        decode_sequences(encode_sequence(bad), SPEC)


# -- shard: sampling -----------------------------------------------------------------------


def test_sample_serves_the_oldest_fresh_sequences_first_then_uniform_replay():
    shard = ReplayShard(SPEC, capacity=10, seed=1)
    shard.insert([payload(i) for i in range(6)])
    batch = decode_batch(shard.sample(2, 3), SPEC)
    got = ids(batch)
    assert len(got) == 5 and got[:2] == [0, 1]
    assert all(0 <= i < 6 for i in got[2:])
    assert ids(decode_batch(shard.sample(3, 0), SPEC)) == [2, 3, 4]
    stats = shard.stats()
    assert stats["online_sampled"] == 5 and stats["samples"] == 8 and stats["fresh"] == 1
    # A batch holds the stored arrays exactly.
    for name, array in make_sequence(0).items():
        assert np.array_equal(batch[name][0], array), name


def test_fresh_sequences_that_were_overwritten_are_skipped_and_topped_up_uniformly():
    shard = ReplayShard(SPEC, capacity=4, seed=0)
    shard.insert([payload(i) for i in range(6)])  # 0 and 1 evicted before being served
    assert ids(decode_batch(shard.sample(2, 0), SPEC)) == [2, 3]
    got = ids(decode_batch(shard.sample(3, 0), SPEC))  # only 4 and 5 are fresh
    assert got[:2] == [4, 5] and got[2] in (2, 3, 4, 5)
    assert shard.stats()["online_sampled"] == 4 and shard.stats()["fresh"] == 0


def test_fresh_queue_stays_bounded_when_nothing_is_served_online():
    """replay_fraction = 1 never pops the fresh queue; it must not grow past the capacity
    (every entry older than `capacity` inserts has been overwritten)."""
    shard = ReplayShard(SPEC, capacity=3)
    one = payload(0)
    for _ in range(20):
        shard.insert([one] * 5)
        shard.sample(0, 2)
    assert len(shard.fresh) <= 3 and shard.stats()["fresh"] == 3
    shard.insert([payload(i) for i in (100, 101, 102)])
    assert ids(decode_batch(shard.sample(3, 0), SPEC)) == [100, 101, 102]


def test_online_and_replay_proportions_of_a_batch():
    shard = ReplayShard(SPEC, capacity=50, seed=3)
    shard.insert([payload(i) for i in range(50)])
    batch = ids(decode_batch(shard.sample(4, 12), SPEC))
    assert len(batch) == 16 and batch[:4] == [0, 1, 2, 3]
    assert shard.stats()["online_sampled"] == 4 and shard.stats()["fresh"] == 46
    shard.sample(0, 16)
    assert shard.stats()["online_sampled"] == 4 and shard.stats()["samples"] == 32


def test_uniform_replay_draws_only_filled_slots_and_covers_them_evenly():
    shard = ReplayShard(SPEC, capacity=10, seed=0)
    shard.insert([payload(i) for i in range(4)])  # slots 4..9 are empty padding
    draws = ids(decode_batch(shard.sample(0, 4), SPEC))
    for _ in range(99):
        draws += ids(decode_batch(shard.sample(0, 4), SPEC))
    counts = np.bincount(draws, minlength=4)
    # never an empty slot (its reward[0] is 0, mask False)
    assert counts.sum() == 400 and len(counts) == 4
    assert counts.min() >= 70 and counts.max() <= 130, counts  # 100 expected; ~3 sigma is 26


def test_sample_returns_none_until_enough_sequences_are_stored():
    shard = ReplayShard(SPEC, capacity=8)
    shard.insert([payload(0), payload(1)])
    assert shard.sample(2, 1) is None
    assert shard.sample(0, 0) is None
    # a refused sample consumes nothing
    assert shard.stats().get("samples", 0) == 0 and len(shard.fresh) == 2
    assert shard.sample(1, 1) is not None


def test_stats_report_every_counter():
    shard = ReplayShard(SPEC, capacity=2, index=7)
    shard.insert([payload(0), payload(1), payload(2), b"x"])
    shard.sample(1, 1)
    stats = shard.stats()
    expected = {
        "shard": 7,
        "size": 2,
        "fresh": 1,
        "sequences": 3,
        "evictions": 1,
        "rejected": 1,
        "samples": 2,
        "online_sampled": 1,
    }
    assert {k: stats.get(k, 0) for k in expected} == expected
    assert "sources" not in stats and stats.get("rate_limited_samples", 0) == 0
    assert repr(shard) == "ReplayShard(7)"


# -- client --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, parts, expected",
    [
        (10, 3, [4, 3, 3]),
        (9, 3, [3, 3, 3]),
        (2, 3, [1, 1, 0]),
        (0, 2, [0, 0]),
        (5000, 1, [5000]),
        (7, 7, [1] * 7),
    ],
)
def test_split_by_hand(total, parts, expected):
    assert split(total, parts) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 64))
def test_split_sums_to_total_and_is_even(total, parts):
    sizes = split(total, parts)
    assert len(sizes) == parts and sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def make_client(capacities, flush_every=2, seed=0, limits=None):
    limits = limits or [None] * len(capacities)
    shards = [
        ReplayShard(SPEC, c, seed=seed + i, index=i, rate_limit=limit)
        for i, (c, limit) in enumerate(zip(capacities, limits))
    ]
    return ReplayClient(shards, SPEC, flush_every=flush_every), shards


def count_insert_calls(shard) -> list:
    """Patch shard.insert to record the number of payloads of each call; returns that list."""
    calls, original = [], shard.insert
    shard.insert = lambda payloads: (calls.append(len(payloads)), original(payloads))[1]
    return calls


def test_client_flushes_round_robin_over_shards():
    client, shards = make_client([10, 10, 10], flush_every=2)
    calls = [count_insert_calls(s) for s in shards]
    for i in range(7):
        client.add(make_sequence(i))
    assert [s.size for s in shards] == [2, 2, 2] and len(client._sequences) == 1
    client.flush()  # the 7th sequence goes to shard 0
    assert [stored_ids(s)[:3] for s in shards] == [[0, 1, 6], [2, 3, -1], [4, 5, -1]]
    assert calls == [[1, 1], [1], [1]]  # one payload per flush
    client.flush()  # nothing to send: no shard is touched
    assert calls == [[1, 1], [1], [1]]
    assert client.room == [INF, INF, INF] and client.has_room()  # no limiter: never held
    totals = client.totals()
    assert totals["sequences"] == 7 and "env_steps" not in totals and "episodes" not in totals


def test_client_totals_sum_counters_over_shards():
    client, shards = make_client([3, 3], flush_every=1)
    for i in range(8):
        client.add(make_sequence(i))  # alternating: 4 per shard, capacity 3
    shards[1].insert([b"garbage"])
    totals = client.totals()
    assert totals["sequences"] == 8 and totals["size"] == 6 and totals["rejected"] == 1
    assert totals["evictions"] == 2 and totals["lost_stored"] == 0 and totals["failed_calls"] == 0
    assert "shard" not in totals and "started" not in totals
    assert [s["shard"] for s in client.stats()] == [0, 1]


def sample(client: ReplayClient, batch_size: int, replay_fraction: float):
    """One batch asked for as the learner asks (learner/learner.py): request, then result."""
    return client.result(client.request(batch_size, replay_fraction))


def test_client_batch_takes_each_shards_share_with_the_online_mix():
    client, shards = make_client([10, 10, 10])
    for i, shard in enumerate(shards):
        shard.insert([payload(10 * i + k) for k in range(4)])
    # B = 5 over 3 shards -> [2, 2, 1]; replay_fraction 0.4 -> online round(1.2)=1, 1, round(0.6)=1
    batch = sample(client, 5, 0.4)
    got = ids(batch)
    assert len(got) == 5 and batch["obs"].shape == (5, T + 1, 3)
    assert got[0] == 0 and 0 <= got[1] < 4 and got[2] == 10 and 10 <= got[3] < 14 and got[4] == 20
    assert [s.stats()["online_sampled"] for s in shards] == [1, 1, 1]
    # replay_fraction 0: every sequence is the next fresh one of its shard
    assert ids(sample(client, 6, 0.0)) == [1, 2, 11, 12, 21, 22]
    # replay_fraction 1: the fresh queues are not touched
    sample(client, 6, 1.0)
    assert [len(s.fresh) for s in shards] == [1, 1, 1]


def test_client_batch_is_none_while_any_shard_is_short():
    client, shards = make_client([10, 10])
    shards[0].insert([payload(i) for i in range(5)])
    shards[1].insert([payload(9)])
    assert sample(client, 4, 0.5) is None
    shards[1].insert([payload(10)])
    assert sample(client, 4, 0.5) is not None


# -- stacked payloads (what actors send: N sequences in one message) -------------------------


def stacked(idents) -> bytes:
    return encode_sequences([make_sequence(i) for i in idents])


def test_stacked_payload_wraps_the_ring_like_single_inserts():
    one_by_one, stacked_shard = ReplayShard(SPEC, capacity=5), ReplayShard(SPEC, capacity=5)
    one_by_one.insert([payload(i) for i in range(8)])
    assert stacked_shard.insert([stacked(range(3)), stacked(range(3, 8))]) == {
        "accepted": 8,
        "rejected": 0,
        "room": INF,
    }
    assert stored_ids(stacked_shard) == stored_ids(one_by_one) == [5, 6, 7, 3, 4]
    for name in SPEC.fields():
        assert np.array_equal(stacked_shard.storage[name], one_by_one.storage[name]), name
    assert stacked_shard.stats()["evictions"] == one_by_one.stats()["evictions"] == 3
    assert list(stacked_shard.fresh) == list(one_by_one.fresh)


def test_stacked_payload_larger_than_capacity_keeps_the_newest():
    shard = ReplayShard(SPEC, capacity=3)
    assert shard.insert([stacked(range(7))])["accepted"] == 7
    assert sorted(i for i in stored_ids(shard)) == [4, 5, 6] and shard.size == 3
    assert shard.stats()["evictions"] == 4 and shard.stats()["sequences"] == 7


def test_stacked_payload_with_one_bad_sequence_is_dropped_whole():
    shard = ReplayShard(SPEC, capacity=5)
    shard.insert([stacked([0, 1])])
    rows = [make_sequence(i) for i in (2, 3, 4)]
    rows[1]["behaviour"][0, 0] = 1.5
    assert shard.insert([encode_sequences(rows)]) == {"accepted": 0, "rejected": 1, "room": INF}
    assert stored_ids(shard) == [0, 1, -1, -1, -1]
    with pytest.raises(CodecError, match=r"behaviour probabilities outside \[0, 1\]"):
        decode_sequences(encode_sequences(rows), SPEC)


def test_client_add_stacks_sequences_per_flush():
    shard = ReplayShard(SPEC, capacity=10)
    sent, original = [], shard.insert
    shard.insert = lambda payloads: (
        sent.append([len(decode_sequences(p, SPEC)["mask"]) for p in payloads]),
        original(payloads),
    )[1]
    client = ReplayClient([shard], SPEC, flush_every=3)
    for i in range(7):
        client.add(make_sequence(i))
    assert sent == [[3], [3]]
    client.flush()
    assert sent == [[3], [3], [1]] and stored_ids(shard)[:7] == list(range(7))


# -- shard restarts: monotonic totals and batches from the surviving shards -----------------


def test_totals_stay_monotonic_when_a_shard_restarts_empty():
    shards = [ReplayShard(SPEC, capacity=10, index=i) for i in range(2)]
    client = ReplayClient(shards, SPEC)
    shards[0].insert([payload(i) for i in range(4)])
    shards[1].insert([payload(i) for i in range(3)])
    shards[0].sample(1, 1)
    before = client.totals()
    assert (before["sequences"], before["samples"], before["size"], before["lost_stored"]) == (
        7,
        2,
        7,
        0,
    )
    # what a Ray restart leaves
    client.shards[0] = shards[0] = ReplayShard(SPEC, capacity=10, index=0)
    after = client.totals()
    assert (after["sequences"], after["samples"]) == (7, 2)
    assert after["size"] == 3 and after["lost_stored"] == 4
    shards[0].insert([payload(9)])
    again = client.totals()
    assert (again["sequences"], again["size"], again["lost_stored"]) == (8, 4, 4)


def test_restore_totals_continues_the_counters_of_a_checkpoint():
    shard = ReplayShard(SPEC, capacity=10)
    client = ReplayClient([shard], SPEC)
    client.restore_totals(
        {"samples": 1000, "size": 99, "sequences": 150, "lost_stored": 7, "failed_calls": 3}
    )
    shard.insert([payload(0)])
    totals = client.totals()
    assert (totals["samples"], totals["sequences"], totals["size"]) == (1000, 151, 1)
    # this client's own, not restored
    assert (totals["lost_stored"], totals["failed_calls"]) == (0, 0)


def test_batch_shares_skip_a_shard_short_of_data():
    shards = [ReplayShard(SPEC, capacity=20, index=i) for i in range(2)]
    client = ReplayClient(shards, SPEC)
    shards[0].insert([payload(i) for i in range(10)])
    shards[1].insert([payload(i) for i in range(1)])
    # the learner refreshes what it knows of the shards
    client.totals()
    assert client.shares(8) == [8, 0]
    batch = sample(client, 8, 1.0)
    assert batch is not None and len(batch["mask"]) == 8
    shards[1].insert([payload(i) for i in range(1, 6)])
    client.totals()
    assert client.shares(8) == [4, 4]


def test_batch_shares_skip_a_shard_that_stops_answering():
    """A shard whose stats() does not answer (dead, restarting, lost with its node) is passed
    over even though its last known size was healthy, and is used again once it answers."""

    class Silenced(ReplayShard):
        silent = False

        def stats(self):
            return None if self.silent else super().stats()

    shards = [ReplayShard(SPEC, capacity=20, index=0), Silenced(SPEC, capacity=20, index=1)]
    client = ReplayClient(shards, SPEC)
    for shard in shards:
        shard.insert([payload(i) for i in range(10)])
    client.totals()
    assert client.shares(8) == [4, 4]
    shards[1].silent = True
    totals = client.totals()
    assert totals["size"] == 20  # counted with its last known figures
    assert client.shares(8) == [8, 0]
    shards[1].silent = False
    client.totals()
    assert client.shares(8) == [4, 4]


# -- rate limit (replay/rate_limit.py) inside a shard ----------------------------------------
# r = 2, m = 3, e = 4 (tests/test_rate_limit.py works it through): room = (10 - diff) / 2 with
# diff = 2 I - S; a sample of k needs size >= 3 and diff - k >= 2.


def limit_2_3_4() -> SampleToInsertRatio:
    return SampleToInsertRatio(samples_per_insert=2.0, min_size=3, error_buffer=4.0)


def test_insert_answers_with_the_room_the_limit_has_left():
    shard = ReplayShard(SPEC, capacity=20, rate_limit=limit_2_3_4())
    assert shard.room() == 5.0
    assert shard.insert([stacked([0, 1])]) == {"accepted": 2, "rejected": 0, "room": 3.0}
    assert shard.insert([payload(2), payload(3), payload(4)]) == {
        "accepted": 3,
        "rejected": 0,
        "room": 0.0,
    }
    assert shard.room() == shard.rate_limit.room() == 0.0
    # Data that arrives without room is still stored: the limit acts on senders through `room`.
    assert shard.insert([payload(5)]) == {"accepted": 1, "rejected": 0, "room": -1.0}
    assert shard.size == 6 and stored_ids(shard)[:6] == list(range(6))
    # A rejected payload is not an insert.
    assert shard.insert([b"junk"]) == {"accepted": 0, "rejected": 1, "room": -1.0}
    assert shard.rate_limit.inserts == 6


def test_the_limit_counts_every_sequence_received_even_past_capacity():
    shard = ReplayShard(SPEC, capacity=3, rate_limit=limit_2_3_4())
    assert shard.insert([stacked(range(7))])["room"] == -2.0  # (10 - 14) / 2
    assert shard.rate_limit.inserts == 7 and shard.size == 3


def test_sample_is_none_exactly_when_the_limit_forbids():
    shard = ReplayShard(SPEC, capacity=20, seed=0, rate_limit=limit_2_3_4())
    shard.insert([payload(0), payload(1)])
    assert shard.sample(1, 0) is None  # 2 stored >= 1 asked, but fewer than m = 3
    assert shard.stats()["rate_limited_samples"] == 1 and len(shard.fresh) == 2
    shard.insert([payload(i) for i in range(2, 5)])  # I = 5: diff 10
    assert ids(decode_batch(shard.sample(1, 2), SPEC))[0] == 0  # 10 - 3 >= 2
    assert shard.sample(0, 3) is not None  # diff 7: 7 - 3 >= 2
    assert shard.sample(1, 2) is None  # diff 4: 4 - 3 < 2
    stats = shard.stats()
    assert (
        stats["rate_limited_samples"],
        stats["samples"],
        stats["online_sampled"],
        stats["fresh"],
    ) == (2, 6, 1, 4)
    assert shard.sample(0, 2) is not None  # 4 - 2 == 2: allowed
    assert shard.sample(0, 1) is None  # diff 2: 2 - 1 < 2
    assert shard.rate_limit.samples == 8 and shard.room() == 4.0  # (10 - 2) / 2
    assert shard.stats()["rate_limited_samples"] == 3


def test_a_sample_refused_for_lack_of_data_is_not_counted_as_rate_limited():
    shard = ReplayShard(SPEC, capacity=20, rate_limit=limit_2_3_4())
    shard.insert([payload(i) for i in range(5)])
    assert shard.sample(3, 3) is None  # 6 asked of 5 stored
    assert shard.stats().get("rate_limited_samples", 0) == 0 and shard.rate_limit.samples == 0


def test_each_shard_counts_with_its_own_copy_of_the_limit():
    limit = limit_2_3_4()
    a = ReplayShard(SPEC, 10, index=0, rate_limit=limit)
    b = ReplayShard(SPEC, 10, index=1, rate_limit=limit)
    a.insert([stacked(range(5))])
    assert a.room() == 0.0 and b.room() == 5.0
    assert (limit.inserts, limit.samples) == (0, 0)


def test_a_shard_without_a_limit_has_unbounded_room_and_samples_once_it_has_enough():
    shard = ReplayShard(SPEC, capacity=4)
    assert shard.room() == INF
    shard.insert([payload(i) for i in range(4)])
    for _ in range(50):
        assert shard.sample(1, 1) is not None
    assert shard.stats().get("rate_limited_samples", 0) == 0


# -- rate limit: the client's room ----------------------------------------------------------
# Shard 0: r = 1, m = 2, e = 2 -> room = 4 - I + S.   Shard 1: r = 1, m = 4, e = 1 -> room = 5 - I + S.
# flush_every 2:  flush 1 -> shard 0 (room 2), flush 2 -> shard 1 (room 3), flush 3 -> shard 0 (room 0),
# flush 4 -> shard 1 (room 1), flush 5: shard 0 is next but has no room -> shard 1 (room -1).


def room_client():
    return make_client(
        [20, 20],
        flush_every=2,
        limits=[SampleToInsertRatio(1.0, 2, 2.0), SampleToInsertRatio(1.0, 4, 1.0)],
    )


def test_flush_skips_a_shard_without_room_for_the_next_with_room():
    client, shards = room_client()
    for i in range(8):
        client.add(make_sequence(i))
    assert client.room == [0.0, 1.0] and client.has_room()
    assert stored_ids(shards[0])[:4] == [0, 1, 4, 5] and stored_ids(shards[1])[:4] == [2, 3, 6, 7]
    client.add(make_sequence(8))
    # flush 5: round-robin says shard 0, room says 1
    client.add(make_sequence(9))
    assert stored_ids(shards[1])[:6] == [2, 3, 6, 7, 8, 9] and shards[0].size == 4
    assert client.room == [0.0, -1.0] and not client.has_room()


def test_with_no_room_anywhere_the_data_goes_to_the_next_shard_all_the_same():
    client, shards = room_client()
    # flush 6: no shard has room -> shard 0 (next)
    for i in range(12):
        client.add(make_sequence(i))
    assert stored_ids(shards[0])[:6] == [0, 1, 4, 5, 10, 11] and shards[1].size == 6
    assert client.room == [-2.0, -1.0] and not client.has_room()
    assert client.totals()["sequences"] == 12


def test_wait_for_room_in_process_reads_each_shards_room_again():
    client, shards = room_client()
    for i in range(10):
        client.add(make_sequence(i))
    assert not client.has_room()
    # shard 0: diff 4, 4 - 2 >= 2 - 2; room 4 - 4 + 2 = 2
    assert shards[0].sample(1, 1) is not None
    assert not client.has_room()  # the client has not asked yet
    assert client.wait_for_room(0.0)
    assert client.room == [2.0, -1.0] and client.has_room()


def test_wait_for_room_first_flushes_what_is_buffered():
    client, shards = room_client()
    for i in range(11):  # the 11th stays buffered (flush_every 2)
        client.add(make_sequence(i))
    shards[0].sample(1, 1)  # shard 0's room: 2
    assert client.wait_for_room(0.0)
    # sent to shard 0 (next in turn, and no room known anywhere), then both rooms read
    assert not client._sequences and shards[0].size == 5 and stored_ids(shards[0])[4] == 10
    assert client.room == [1.0, -1.0]


def test_wait_for_room_sees_a_restarted_shard_empty_and_open():
    client, shards = room_client()
    for i in range(10):
        client.add(make_sequence(i))
    assert not client.wait_for_room(0.0) and client.room == [0.0, -1.0]
    client.shards[1] = ReplayShard(SPEC, 20, index=1, rate_limit=SampleToInsertRatio(1.0, 4, 1.0))
    assert client.wait_for_room(0.0) and client.room == [0.0, 5.0]


# -- rate limit: actors and learner taking turns through clients ------------------------------


def take_turns(num_shards: int, batch: int = 12, ratio: float = 4.0, rounds: int = 2000):
    """Each round the actor adds one sequence if some shard has room and the learner asks for one
    batch; the limits are what driver/wiring.shard_rate_limit builds. Returns (inserted, delivered,
    sampled): sequences sent, sequences in the batches the learner got, samples the shards counted."""
    m = -(-batch // num_shards)
    limit = SampleToInsertRatio(ratio, m, max(ratio * m, batch))
    shards = [ReplayShard(SPEC, 200, seed=i, index=i, rate_limit=limit) for i in range(num_shards)]
    actor, learner = ReplayClient(shards, SPEC, flush_every=1), ReplayClient(shards, SPEC)
    inserted = delivered = 0
    for _ in range(rounds):
        if actor.has_room() or actor.wait_for_room(0.0):
            actor.add(make_sequence(inserted))
            inserted += 1
        got = sample(learner, batch, 0.5)
        delivered += 0 if got is None else len(got["mask"])
    return inserted, delivered, sum(s.rate_limit.samples for s in shards)


def test_one_shard_serves_the_learner_r_sequences_per_inserted_one():
    inserted, delivered, sampled = take_turns(num_shards=1)
    assert inserted == 2000 and delivered == sampled
    assert delivered == pytest.approx(4.0 * inserted, abs=12 + 4.0 * 12 + 12)  # within the buffers


def test_several_shards_waste_no_samples_on_a_batch_another_shard_refused():
    inserted, delivered, sampled = take_turns(num_shards=2)
    # at most one batch held back
    assert sampled - delivered <= 12
    assert delivered == pytest.approx(4.0 * inserted, rel=0.1)
