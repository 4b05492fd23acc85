"""Sample-to-insert rate limiter (replay/rate_limit.py) and how the driver sizes each shard's
(driver/wiring.shard_rate_limit). Pure Python, no Ray.

Worked example used below, r = 2 samples per insert, m = 3, e = 4, counted in sequences:
  diff = 2 I - S
  room = (r m + e - diff) / r = (10 - diff) / 2   (>= m - I = 3 - I, as S >= 0 and e >= 0)
  sample of k allowed iff size >= 3 and diff - k >= r m - e = 2
With no samples yet room = (10 - 2 I) / 2 = 5 - I: inserts 1..5 are let in, after the 5th
room is 0 and the sender holds. With I = 5 (diff 10) single samples are allowed while
10 - S - 1 >= 2, i.e. for S = 0..7: the 9th is refused.
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import Config, validate
from common.split import split
from driver import wiring
from replay.rate_limit import SampleToInsertRatio


def example() -> SampleToInsertRatio:
    return SampleToInsertRatio(samples_per_insert=2.0, min_size=3, error_buffer=4.0)


# -- inserts -------------------------------------------------------------------------------


def test_room_counts_down_one_per_insert_and_holds_after_the_fifth():
    limit = example()
    rooms = []
    for _ in range(5):
        assert limit.room() > 0
        rooms.append(limit.room())
        limit.inserted(1)
    assert rooms == [5.0, 4.0, 3.0, 2.0, 1.0]
    assert limit.room() == 0.0  # room 0 already holds (senders hold at room <= 0)
    assert limit.diff == 10.0


def test_room_during_the_first_m_inserts_is_never_short_of_the_rest_of_them():
    """Without an error buffer the limiter holds exactly at m: the first m inserts always get in."""
    limit = SampleToInsertRatio(samples_per_insert=0.5, min_size=4, error_buffer=0.0)
    for inserted in range(4):
        assert limit.room() == 4 - inserted > 0
        limit.inserted(1)
    assert limit.room() == 0.0
    big = SampleToInsertRatio(samples_per_insert=100.0, min_size=10, error_buffer=0.0)
    big.inserted(3)
    assert big.room() == 7.0


def test_samples_give_back_room_at_one_insert_per_r_samples():
    limit = example()
    limit.inserted(5)
    assert limit.room() == 0.0
    limit.sampled(1)  # diff 9: (10 - 9) / 2
    assert limit.room() == 0.5
    limit.sampled(3)  # diff 6
    assert limit.room() == 2.0


def test_inserts_past_the_room_are_counted_and_make_room_negative():
    limit = example()
    limit.inserted(8)  # a flush of 8 with room 5
    assert limit.diff == 16.0 and limit.room() == -3.0


# -- samples -------------------------------------------------------------------------------


def test_samples_wait_for_min_size_stored():
    limit = example()
    limit.inserted(2)
    # diff 4 - 1 >= 2, but only 2 stored
    assert not limit.can_sample(1, size=2)
    # the size check alone held it back
    assert limit.can_sample(1, size=3)
    limit.inserted(1)
    assert limit.can_sample(1, size=3)


def grants(limit, num: int) -> int:
    """Samples of `num` the limit allows one after another (5 stored)."""
    granted = 0
    while limit.can_sample(num, size=5):
        limit.sampled(num)
        granted += 1
        assert granted < 100
    return granted


def test_single_samples_are_allowed_up_to_the_eighth_and_the_ninth_is_refused():
    limit = example()
    limit.inserted(5)
    assert grants(limit, 1) == 8 and limit.samples == 8 and limit.diff == 2.0


def test_sample_boundary_is_inclusive():
    limit = example()
    limit.inserted(5)
    limit.sampled(7)  # diff 3
    assert limit.can_sample(1, size=5)  # 3 - 1 == 2: allowed
    assert not limit.can_sample(2, size=5)  # 3 - 2 == 1 < 2
    limit.sampled(1)
    assert not limit.can_sample(1, size=5)


def test_a_batch_of_three_is_allowed_twice_then_refused():
    limit = example()
    limit.inserted(5)
    assert grants(limit, 3) == 2 and limit.samples == 6  # 10 - 6 - 3 = 1 < 2


def test_ratio_is_kept_over_a_long_alternation():
    """Actor inserts whenever there is room, learner samples whenever it may: after the warm-up
    the learner has sampled r sequences per insert, never more than e away from it."""
    r, m, e = 4.0, 5, 8.0
    limit = SampleToInsertRatio(r, m, e)
    stored = 0
    for _ in range(2000):
        if limit.room() > 0:
            limit.inserted(1)
            stored += 1
        if limit.can_sample(2, size=stored):
            limit.sampled(2)
        offset = r * limit.inserts - limit.samples - r * m
        if limit.inserts >= m + 3:
            assert -e <= offset <= e + r, (limit.inserts, limit.samples)
    assert limit.inserts > 100
    assert limit.samples / limit.inserts == pytest.approx(r, rel=0.05)


# -- restarts ------------------------------------------------------------------------------


def test_a_fresh_limiter_takes_inserts_at_once_and_serves_samples_once_it_holds_m():
    """A shard that Ray restarts empty builds a fresh limiter (I = S = 0), whatever the old one
    had counted: actors may insert right away and the learner waits for m stored."""
    old = example()
    old.inserted(50)
    # diff 10: the old one holds actors
    old.sampled(90)
    assert old.room() <= 0
    fresh = example()
    assert (fresh.inserts, fresh.samples) == (0, 0)
    assert fresh.room() == 5.0
    for stored in (1, 2):
        fresh.inserted(1)
        assert not fresh.can_sample(1, size=stored)
    fresh.inserted(1)
    assert fresh.can_sample(1, size=3)


# -- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, named",
    [
        ((0.0, 3, 4.0), "r=0.0"),
        ((-1.5, 3, 4.0), "r=-1.5"),
        ((2.0, 0, 4.0), "m=0"),
        ((2.0, -2, 4.0), "m=-2"),
        ((2.0, 3, -0.5), "e=-0.5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(args, named):
    with pytest.raises(ValueError) as excinfo:
        SampleToInsertRatio(*args)
    assert named in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_smallest_valid_arguments_are_accepted():
    limit = SampleToInsertRatio(1e-9, 1, 0.0)
    assert limit.room() > 0


# -- driver/wiring.shard_rate_limit --------------------------------------------------------


def shard_limit(**overrides):
    base = dict(num_cpus=1, replay_capacity=1000)
    return wiring.shard_rate_limit(validate(Config(**{**base, **overrides})))


def test_shard_rate_limit_splits_the_minimum_and_the_buffer_over_shards():
    limit = shard_limit(
        replay_ratio=3.2, min_replay=64, batch_size=32, num_replay_shards=3, replay_error_buffer=50
    )
    assert isinstance(limit, SampleToInsertRatio)
    assert (limit.samples_per_insert, limit.min_size) == (3.2, 22)  # ceil(64 / 3)
    # ceil(50 / 3) sequences' samples
    assert limit.error_buffer == pytest.approx(3.2 * 17)
    assert (limit.inserts, limit.samples) == (0, 0)


def test_shard_rate_limit_uses_the_batch_when_it_exceeds_min_replay():
    limit = shard_limit(
        replay_ratio=12.8, min_replay=4, batch_size=10, num_replay_shards=4, replay_error_buffer=4
    )
    # ceil(10 / 4); ceil(4 / 4)
    assert limit.min_size == 3 and limit.error_buffer == pytest.approx(12.8 * 1)


def test_shard_rate_limit_buffers_at_least_one_batch_at_a_low_ratio():
    limit = shard_limit(replay_ratio=0.25, min_replay=32, batch_size=64, num_replay_shards=1)
    # 0.25 * 64 = 16 < 64
    assert (limit.min_size, limit.error_buffer) == (64, 64)


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.floats(0.01, 300.0),
    min_replay=st.integers(1, 200),
    batch=st.integers(1, 128),
    shards=st.integers(1, 8),
    extra_inserts=st.integers(0, 500),
    samples=st.integers(0, 5000),
)
def test_held_actors_never_hold_the_learner_too(
    ratio, min_replay, batch, shards, extra_inserts, samples
):
    """Whenever a shard has no room left for actors (it holds at least m: capacity permitting),
    it serves any share of a batch, up to the whole batch (what one shard is asked for when the
    others are short): actors and learner are never both held by one shard."""
    shards = min(shards, batch)
    limit = shard_limit(
        replay_ratio=ratio,
        min_replay=min(min_replay, 1000),
        batch_size=batch,
        num_replay_shards=shards,
    )
    # the smallest insert count at which this many samples leave no room, plus some
    needed = math.ceil(limit.min_size + (limit.error_buffer + samples) / ratio)
    limit.inserted(needed + extra_inserts)
    limit.sampled(samples)
    assert limit.room() <= 1e-9
    for k in range(1, batch + 1):
        assert limit.can_sample(k, size=limit.inserts), (k, limit)


def test_shard_rate_limit_is_off_at_ratio_zero():
    assert shard_limit(replay_ratio=0.0) is None


def test_default_config_limits_each_shard():
    cfg = validate(Config(num_cpus=1))
    limit = wiring.shard_rate_limit(cfg)
    per_shard = math.ceil(max(cfg.min_replay, cfg.batch_size) / cfg.num_replay_shards)
    assert limit.samples_per_insert == cfg.replay_ratio == 38.4 and limit.min_size == per_shard


def test_every_presets_shards_can_hold_the_minimum_their_limit_waits_for():
    from common.config import PRESETS

    for name, values in PRESETS.items():
        for shards in (1, 2, 3, 4):
            cfg = validate(
                Config(**{**values, "preset": name, "num_cpus": 1, "num_replay_shards": shards})
            )
            limit = wiring.shard_rate_limit(cfg)
            assert min(split(cfg.replay_capacity, shards)) >= limit.min_size, (name, shards)


def test_every_shard_can_hold_the_minimum_its_limit_waits_for():
    from common.config import ConfigError

    try:
        cfg = validate(
            Config(num_cpus=1, replay_capacity=10, min_replay=10, batch_size=9, num_replay_shards=3)
        )
    except ConfigError:
        return  # refusing the config is a fix too
    limit = wiring.shard_rate_limit(cfg)
    # [4, 3, 3] vs 4
    assert min(split(cfg.replay_capacity, cfg.num_replay_shards)) >= limit.min_size
