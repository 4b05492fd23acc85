"""Learner (learner/learner.py) in-process, and checkpoint files (learner/checkpoint.py):
skipped non-finite updates leave every piece of state bit-identical, the EMA target follows
its formula, checkpoints round-trip exactly into a fresh learner, and damaged files are
refused (or skipped for the previous one)."""

import copy
import dataclasses
import io
import math
import os

import numpy as np
import pytest
import torch

from common import codec
from common.config import Config, validate
from common.sequence import SequenceSpec, encode_sequences
from learner import checkpoint
from learner.batch import to_time_major
from learner.checkpoint import CheckpointError
from learner.learner import Learner
from replay.client import ReplayClient
from replay.rate_limit import SampleToInsertRatio
from replay.shard import ReplayShard
from replay.stream import BatchStream
from transport.weight_store import WeightStore
from transport.weights import WeightPublisher

T, B, A, OBS = 6, 4, 2, (4,)  # CartPole: 4 observations, 2 actions
SPEC = SequenceSpec(T, OBS, "float32", A)


def small_config(**overrides) -> Config:
    base = dict(
        env="CartPole-v1",
        sequence_length=T,
        sequence_stride=3,
        batch_size=B,
        min_replay=B,
        replay_capacity=32,
        width=16,
        depth=1,
        hidden_size=8,
        support_size=5,
        unroll_steps=2,
        device="cpu",
        torch_threads=1,
        publish_every=1,
        target_ema=0.1,
        learning_rate=1e-2,
        num_cpus=1,
    )
    return validate(Config(**{**base, **overrides}))


def make_learner(cfg=None, seed=0, rate_limit=None):
    cfg = cfg or small_config(seed=seed)
    store = WeightStore()
    client = ReplayClient([ReplayShard(SPEC, cfg.replay_capacity, rate_limit=rate_limit)], SPEC)
    batches = BatchStream(client, cfg.batch_size, cfg.replay_fraction)
    return Learner(cfg, SPEC, batches, WeightPublisher(store)), store


def make_batch(seed=0, terminal_at=3):
    """Time-major batch of B random but valid sequences; sequence 1 ends at step terminal_at."""
    return to_time_major(make_arrays(seed, terminal_at))


def make_arrays(seed=0, terminal_at=3):
    """make_batch's sequences as replay stores them: batch-major numpy [B, T, ...]."""
    rng = np.random.default_rng(seed)
    arrays = SPEC.empty(leading=(B,))
    arrays["obs"][:] = rng.normal(scale=0.1, size=arrays["obs"].shape)
    arrays["action"][:] = rng.integers(0, A, size=(B, T))
    arrays["reward"][:] = 1.0
    p = rng.uniform(0.2, 0.8, size=(B, T))
    arrays["behaviour"][:] = np.stack([p, 1 - p], -1)
    arrays["mask"][:] = True
    arrays["mask"][1, terminal_at + 1 :] = False
    arrays["reward"][1, terminal_at + 1 :] = 0.0
    arrays["terminal"][1, terminal_at] = True
    return arrays


def replay_payload(n, seed=0) -> bytes:
    """n valid sequences of SPEC stacked in one insert payload."""
    arrays = make_arrays(seed)
    return encode_sequences(
        [{name: value[i % B] for name, value in arrays.items()} for i in range(n)]
    )


def snapshot(learner):
    """Deep, detached copies of every piece of learner state an update may touch."""
    return {
        "online": {k: v.clone() for k, v in learner.online.state_dict().items()},
        "target": {k: v.clone() for k, v in learner.target.state_dict().items()},
        "optimizer": copy.deepcopy(learner.optimizer.state_dict()),
        "loss_state": copy.deepcopy(learner.loss_state),
        "steps": learner.steps,
    }


def assert_tensors_identical(a, b, what=""):
    """Bit-identical nested dicts / lists / tensors / numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, what
        assert torch.equal(
            a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8),
            b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8),
        ), what
    elif isinstance(a, dict):
        assert set(a) == set(b), what
        for key in a:
            assert_tensors_identical(a[key], b[key], f"{what}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tensors_identical(x, y, f"{what}[{i}]")
    else:
        assert a == b, (what, a, b)


def assert_state_identical(a, b):
    for key in a:
        assert_tensors_identical(a[key], b[key], key)


def states_differ(a, b) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained():
    """A learner after three real updates (so Adam has moments and the target lags)."""
    learner, store = make_learner()
    for seed in range(3):
        metrics = learner.update(make_batch(seed))
        assert np.isfinite(metrics["loss/total"]) and np.isfinite(metrics["learner/grad_norm"])
    assert learner.steps == 3 and learner.skipped == 0
    return learner, store


# -- non-finite updates --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, index", [("reward", (2, 0)), ("obs", (1, 3, 0)), ("behaviour", (0, 2, 1))]
)
def test_non_finite_batch_skips_the_update_and_leaves_state_bit_identical(field, index):
    learner, store = make_learner()
    learner.update(make_batch(0))
    learner.update(make_batch(1))
    before = snapshot(learner)
    version = store.latest()[0]
    batch = make_batch(2)
    batch[field] = batch[field].clone()
    batch[field][index] = float("nan")  # injected after decode, which would refuse it
    metrics = learner.update(batch)
    assert learner.skipped == 1 and metrics["learner/skipped_updates"] == 1
    assert learner.steps == before["steps"] == 2 and store.latest()[0] == version
    assert_state_identical(before, snapshot(learner))
    assert all(p.grad is None for p in learner.online.parameters())
    # The next finite batch trains normally.
    learner.update(make_batch(3))
    assert learner.steps == 3 and learner.skipped == 1
    assert states_differ(before["online"], learner.online.state_dict())


def test_two_hot_of_nan_is_nan_not_an_index_error():
    """A NaN target (a diverged target network, a bad reward) must give a non-finite loss the
    learner can skip; it used to become an out-of-range scatter index and raise."""
    from common.value_transforms import two_hot

    probs = two_hot(torch.tensor([0.5, float("nan"), float("inf")]), 2)
    assert probs.shape == (3, 5) and torch.isnan(probs[1]).any()
    torch.testing.assert_close(probs[0], torch.tensor([0, 0, 0.5, 0.5, 0]))
    torch.testing.assert_close(probs[2], torch.tensor([0, 0, 0, 0, 1.0]))


def test_non_finite_gradient_skips_the_update(capsys):
    """A finite loss whose gradient is not: a value weight of 1e36 makes the loss ~2.3e36 (finite in
    float32) and gradient entries up to ~5e35, whose squares overflow the global norm to inf."""
    learner, store = make_learner()
    learner.update(make_batch(0))
    capsys.readouterr()
    before, version = snapshot(learner), store.latest()[0]
    learner.params = dataclasses.replace(learner.params, value_weight=1e36)
    metrics = learner.update(make_batch(1))
    assert math.isfinite(metrics["loss/total"]) and metrics["loss/total"] > 1e35
    assert (
        learner.skipped == 1
        and metrics["learner/skipped_updates"] == 1
        and "learner/grad_norm" not in metrics
    )
    assert learner.steps == 1 and store.latest()[0] == version
    assert_state_identical(before, snapshot(learner))
    assert all(p.grad is None for p in learner.online.parameters())
    assert (
        capsys.readouterr().out
        == "learner: non-finite gradient at step 1; update skipped (1 so far)\n"
    )
    # with the ordinary weight the same batch trains
    learner.params = learner.cfg.loss_params()
    assert math.isfinite(learner.update(make_batch(1))["learner/grad_norm"]) and learner.steps == 2


# -- EMA target ----------------------------------------------------------------------------


def test_ema_target_follows_the_formula_for_one_step():
    learner, _ = make_learner()
    for seed in range(2):
        learner.update(make_batch(seed))
    a = learner.cfg.target_ema
    target_before = {k: v.double() for k, v in learner.target.state_dict().items()}
    # the target lags
    assert states_differ(learner.target.state_dict(), learner.online.state_dict())
    learner.update(make_batch(5))
    online_after = {k: v.double() for k, v in learner.online.state_dict().items()}
    for name, target in learner.target.state_dict().items():
        expected = (1 - a) * target_before[name] + a * online_after[name]
        torch.testing.assert_close(target.double(), expected, rtol=0, atol=1e-6, msg=name)
        # and it is not simply a copy of either network
        if not torch.equal(target_before[name], online_after[name]):
            assert not torch.equal(target.double(), online_after[name]), name
    assert all(not p.requires_grad for p in learner.target.parameters())


def assert_target(learner, expected, what):
    for name, target in learner.target.state_dict().items():
        torch.testing.assert_close(
            target.double(), expected[name], rtol=0, atol=1e-6, msg=f"{what}: {name}"
        )


def test_periodic_blend_halves_the_gap_once_every_n_steps():
    """target_blend_every_steps = 3: steps 3 and 6 blend target <- (ema + online) / 2 after the
    EMA, every other step is the EMA alone."""
    learner, _ = make_learner(small_config(target_blend_every_steps=3, target_ema=0.1))
    for seed in range(6):
        before = {k: v.double() for k, v in learner.target.state_dict().items()}
        learner.update(make_batch(seed))
        online = {k: v.double() for k, v in learner.online.state_dict().items()}
        ema = {k: 0.9 * before[k] + 0.1 * online[k] for k in before}
        step = learner.steps
        if step % 3 == 0:
            assert_target(
                learner, {k: 0.5 * ema[k] + 0.5 * online[k] for k in ema}, f"step {step}, blend"
            )
        else:
            assert_target(learner, ema, f"step {step}, EMA only")
        assert learner.blends == step // 3, step
    assert learner.blends == 2


def test_no_blend_when_the_period_is_zero():
    learner, _ = make_learner(small_config(target_blend_every_steps=0))
    for seed in range(4):
        learner.update(make_batch(seed))
    assert learner.blends == 0


def test_a_skipped_update_neither_counts_nor_blends():
    learner, _ = make_learner(small_config(target_blend_every_steps=2))
    learner.update(make_batch(0))
    batch = make_batch(1)
    batch["reward"] = batch["reward"].clone()
    batch["reward"][0, 0] = float("nan")
    learner.update(batch)  # skipped: still step 1, no blend
    assert (learner.steps, learner.blends, learner.skipped) == (1, 0, 1)
    learner.update(make_batch(2))
    assert (learner.steps, learner.blends) == (2, 1)


def test_seed_preset_blends_once_per_600_steps():
    from common.config import PRESETS

    assert PRESETS["seed"]["target_blend_every_steps"] == 600
    learner, _ = make_learner(
        small_config(target_blend_every_steps=PRESETS["seed"]["target_blend_every_steps"])
    )
    learner.steps = 598  # as if 598 updates were done
    learner.update(make_batch(0))
    assert learner.blends == 0
    learner.update(make_batch(1))  # step 600
    assert learner.blends == 1
    learner.steps = 1199
    learner.update(make_batch(2))  # step 1200
    assert learner.blends == 2


def test_publish_sends_the_acting_network_with_the_step_as_version():
    from common.codec import decode_weights

    learner, store = make_learner(small_config(publish_every=2))
    assert store.latest()[0] == 0
    learner.update(make_batch(0))
    assert store.latest()[0] == 0
    learner.update(make_batch(1))
    version, payload = store.latest()
    assert version == 2
    weights = decode_weights(payload)
    # actors act with the target by default
    for name, tensor in learner.target.state_dict().items():
        assert np.array_equal(weights[name], tensor.numpy()), name


def test_precision_auto_is_fp32_on_cpu_and_bf16_is_honoured():
    from learner.learner import use_bf16

    assert not use_bf16("auto", torch.device("cpu")) and not use_bf16("fp32", torch.device("cpu"))
    assert use_bf16("bf16", torch.device("cpu"))
    assert not make_learner()[0].bf16


def test_bf16_autocast_keeps_loss_math_in_fp32_and_learns():
    """Under bf16 autocast the heads still return float32, the loss is close to the fp32 loss
    on the same weights and batch, weights and optimiser state stay float32, and repeated
    steps on one batch lower the loss (CPU autocast; on CUDA 'auto' picks the same path)."""
    fp32, _ = make_learner(small_config(precision="fp32"))
    bf16, _ = make_learner(small_config(precision="bf16"))
    assert bf16.bf16
    bf16.online.load_state_dict(fp32.online.state_dict())
    bf16.target.load_state_dict(fp32.target.state_dict())
    batch = make_batch(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, value = bf16.online.predict(bf16.online.represent(batch["obs"][0]))
    assert logits.dtype == value.dtype == torch.float32
    first = [fp32.update(batch)["loss/total"], bf16.update(batch)["loss/total"]]
    assert np.isfinite(first).all() and abs(first[0] - first[1]) < 0.05 * abs(first[0]) + 0.05, (
        first
    )
    for _ in range(30):
        last = bf16.update(batch)["loss/total"]
    assert last < first[1] - 0.1, (first, last)
    assert all(p.dtype == torch.float32 for p in bf16.online.parameters())
    assert all(
        v.dtype == torch.float32
        for s in bf16.optimizer.state.values()
        for v in s.values()
        if v.dim()
    )


# -- torch.compile -------------------------------------------------------------------------


def test_compile_auto_is_off_on_cpu():
    assert not make_learner(small_config(compile="auto"))[0].compiled
    assert make_learner(small_config(compile="on"))[0].compiled


def test_compiled_updates_match_eager_updates():
    """torch.compile changes kernels, not the maths: same weights and batches give the same
    losses and gradient norms (to float tolerance) as the eager learner, with start states
    chosen at random (the fixed-size selection the compiled graph needs)."""
    eager, _ = make_learner(small_config(compile="off", starts_per_sequence=2))
    compiled, _ = make_learner(small_config(compile="on", starts_per_sequence=2))
    compiled.online.load_state_dict(eager.online.state_dict())
    compiled.target.load_state_dict(eager.target.state_dict())
    for seed in range(3):
        torch.manual_seed(seed)
        a = eager.update(make_batch(seed, terminal_at=seed + 1))
        torch.manual_seed(seed)
        b = compiled.update(make_batch(seed, terminal_at=seed + 1))
        for key in ("loss/total", "loss/pg", "loss/value", "loss/model", "learner/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (seed, key, a[key], b[key])


def test_a_loss_that_cannot_be_compiled_runs_eagerly(monkeypatch, capsys):
    """No C++ compiler (say): one line on stdout, then the eager loss, and the same numbers."""

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    learner, _ = make_learner(small_config(compile="on"))
    twin, _ = make_learner(small_config(compile="off"))
    twin.online.load_state_dict(learner.online.state_dict())
    twin.target.load_state_dict(learner.target.state_dict())
    got, want = learner.update(make_batch(0)), twin.update(make_batch(0))
    assert got["loss/total"] == want["loss/total"]
    lines = [
        line for line in capsys.readouterr().out.splitlines() if "torch.compile failed" in line
    ]
    assert lines == [
        "learner: torch.compile failed (RuntimeError: InductorError: no working C++ compiler found); "
        "running the loss eagerly"
    ]
    learner.update(make_batch(1))  # eager from now on: no second note
    assert "torch.compile failed" not in capsys.readouterr().out


@pytest.mark.parametrize("compiled_raises", [False, True])
def test_a_data_error_surfaces_as_itself_and_keeps_compilation_on(
    monkeypatch, capsys, compiled_raises
):
    """A batch of the wrong shape raises check_batch's ValueError whether the compiled call raises it
    (compiled_raises=False: the 'compiler' is the identity) or something of its own (a backend-style
    error); no fallback note, and the next good batch goes through the compiled callable again."""
    calls = []

    def fake_compile(fn, **kwargs):
        def compiled(*args):
            calls.append(1)
            if compiled_raises and args[2]["action"].shape[1] != B:
                raise RuntimeError("BackendCompilerFailed: fake tensor shape mismatch")
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    learner, _ = make_learner(small_config(compile="on"))
    capsys.readouterr()
    batch = make_batch(0)
    batch["action"] = batch["action"][:, :2]  # wrong shape: check_batch names it
    with pytest.raises(
        ValueError, match=r"^batch\['reward'\] must have shape \(6, 2\), got \(6, 4\)$"
    ):
        learner.update(batch)
    assert "torch.compile failed" not in capsys.readouterr().out
    assert len(calls) == 1
    learner.update(make_batch(1))
    assert len(calls) == 2 and learner.steps == 1


# -- checkpoint bytes ----------------------------------------------------------------------


def test_checkpoint_round_trip_restores_everything_into_a_fresh_learner(trained):
    source, _ = trained
    fresh, store = make_learner(seed=5)
    assert states_differ(source.online.state_dict(), fresh.online.state_dict())
    data = source.checkpoint_bytes()
    fresh.load_checkpoint_bytes(data)
    assert_state_identical(snapshot(source), snapshot(fresh))
    assert (fresh.steps, fresh.skipped, fresh.blends) == (
        source.steps,
        source.skipped,
        source.blends,
    )
    # the restored weights are published
    assert store.latest()[0] == source.steps
    # Same state, same batch, same RNG: the next update is identical too (Adam moments and step count).
    rng = torch.get_rng_state()
    twin = copy.deepcopy(source)
    twin.update(make_batch(9))
    torch.set_rng_state(rng)
    fresh.update(make_batch(9))
    assert_state_identical(snapshot(twin), snapshot(fresh))


def test_checkpoint_is_loadable_with_weights_only(trained):
    state = torch.load(io.BytesIO(trained[0].checkpoint_bytes()), weights_only=True)
    assert {"online", "target", "optimizer", "steps"} <= set(state)


def damaged(data: bytes, damage: str) -> bytes:
    """Checkpoint bytes with one kind of damage."""
    if damage == "truncate":
        return data[: len(data) // 2]
    if damage == "garbage":
        return b"not a checkpoint" * 10
    if damage == "empty":
        return b""
    if damage == "flip-header":  # inside the first member's name
        return data[:30] + bytes([data[30] ^ 0xFF]) + data[31:]
    # one bit of the largest stored tensor (torch.load takes it)
    if damage == "flip-tensor":
        import re
        import struct
        import zipfile

        tensors = [
            m
            for m in zipfile.ZipFile(io.BytesIO(data)).infolist()
            if re.search(r"/data/\d+$", m.filename)
        ]
        member = max(tensors, key=lambda m: m.file_size)
        name_len, extra_len = struct.unpack(
            "<HH", data[member.header_offset + 26 : member.header_offset + 30]
        )
        at = member.header_offset + 30 + name_len + extra_len + member.file_size // 2
        return data[:at] + bytes([data[at] ^ 0x04]) + data[at + 1 :]
    raise ValueError(damage)


@pytest.mark.parametrize(
    "damage, cause",
    [("truncate", "ValueError"), ("garbage", "UnpicklingError"), ("empty", "EOFError")],
)
def test_loading_a_damaged_checkpoint_raises_and_changes_nothing(trained, damage, cause):
    learner, store = make_learner(seed=5)
    before, version = snapshot(learner), store.latest()[0]
    with pytest.raises(
        CheckpointError, match=rf"^checkpoint data is corrupt or truncated \({cause}\)$"
    ):
        learner.load_checkpoint_bytes(damaged(trained[0].checkpoint_bytes(), damage))
    assert_state_identical(before, snapshot(learner))
    assert store.latest()[0] == version


def test_checkpoint_of_another_architecture_is_refused_before_anything_is_overwritten(trained):
    other, _ = make_learner(small_config(width=32))
    before = {k: v.clone() for k, v in other.online.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"checkpoint online parameter \S+ has shape .* this config builds"
    ) as err:
        other.load_checkpoint_bytes(trained[0].checkpoint_bytes())
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in other.online.state_dict().items())


# -- checkpoint files ----------------------------------------------------------------------


class NotAllowed:
    """torch.load(weights_only=True) must refuse to build this."""


def test_save_keeps_the_newest_n_by_step_number(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (2, 9, 10, 100, 30):
        checkpoint.save(folder, step, f"step {step}".encode(), keep=3)
    names = [p.name for p in checkpoint.list_checkpoints(folder)]
    assert names == ["ckpt-100.pt", "ckpt-30.pt", "ckpt-10.pt"]  # numeric, not lexicographic
    assert (folder / "ckpt-30.pt").read_bytes() == b"step 30"
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-10.pt", "ckpt-100.pt", "ckpt-30.pt"]


def test_save_leaves_other_files_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "ckpt-77.pt.tmp").write_bytes(b"half")  # a crashed write
    (tmp_path / "ckpt-x.pt").write_bytes(b"?")
    for step in range(5):
        checkpoint.save(tmp_path, step, b"x", keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-4.pt",
        "ckpt-77.pt.tmp",
        "ckpt-x.pt",
        "notes.txt",
    ]
    assert checkpoint.list_checkpoints(tmp_path / "missing") == []


def test_write_atomic_never_leaves_a_partial_file_under_the_final_name(tmp_path, monkeypatch):
    path = tmp_path / "ckpt-1.pt"
    checkpoint.write_atomic(path, b"old complete checkpoint")
    assert path.read_bytes() == b"old complete checkpoint" and not list(tmp_path.glob("*.tmp"))

    def crash(src, dst):
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.write_atomic(path, b"new")
    assert path.read_bytes() == b"old complete checkpoint"
    monkeypatch.undo()
    checkpoint.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_load_newest_falls_back_past_corrupt_files(tmp_path, trained):
    learner = trained[0]
    good = learner.checkpoint_bytes()
    checkpoint.save(tmp_path, 1, good, keep=5)
    checkpoint.save(tmp_path, 2, good, keep=5)
    checkpoint.save(tmp_path, 3, good[: len(good) - 100], keep=5)  # a truncated newest file
    path, data, errors = checkpoint.load_newest(tmp_path)
    assert path.name == "ckpt-2.pt" and data == good
    assert len(errors) == 1 and "ckpt-3.pt" in errors[0] and "\n" not in errors[0]
    # the next one is garbage too
    checkpoint.write_atomic(tmp_path / "ckpt-2.pt", b"\x00" * 64)
    path, data, errors = checkpoint.load_newest(tmp_path)
    assert path.name == "ckpt-1.pt" and len(errors) == 2
    fresh, _ = make_learner(seed=3)
    fresh.load_checkpoint_bytes(data)
    assert_state_identical(snapshot(learner), snapshot(fresh))


def test_load_newest_with_nothing_readable(tmp_path):
    assert checkpoint.load_newest(tmp_path / "none") == (None, None, [])
    (tmp_path / "ckpt-7.pt").write_bytes(b"")
    path, data, errors = checkpoint.load_newest(tmp_path)
    assert (path, data) == (None, None) and len(errors) == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip-header", "flip-tensor"])
def test_read_checked_refuses_damaged_files_with_one_line_naming_the_file(
    tmp_path, trained, damage
):
    path = tmp_path / "ckpt-5.pt"
    path.write_bytes(damaged(trained[0].checkpoint_bytes(), damage))
    with pytest.raises(CheckpointError) as excinfo:
        checkpoint.read_checked(path)
    text = str(excinfo.value)
    assert str(path) in text and "corrupt or truncated" in text and "\n" not in text


def test_load_newest_skips_a_newest_file_with_a_flipped_weight_bit(tmp_path, trained):
    good = trained[0].checkpoint_bytes()
    checkpoint.save(tmp_path, 1, good, keep=3)
    checkpoint.save(tmp_path, 2, damaged(good, "flip-tensor"), keep=3)
    # torch alone does not notice
    torch.load(io.BytesIO(damaged(good, "flip-tensor")), weights_only=True)
    path, data, errors = checkpoint.load_newest(tmp_path)
    assert path.name == "ckpt-1.pt" and data == good and "ckpt-2.pt" in errors[0]


def test_read_checked_refuses_pickled_objects(tmp_path):
    path = tmp_path / "ckpt-1.pt"
    torch.save({"online": {"w": torch.zeros(2)}, "evil": NotAllowed()}, path)
    with pytest.raises(CheckpointError) as excinfo:
        checkpoint.read_checked(path)
    text = str(excinfo.value)
    assert str(path) in text and "\n" not in text
    torch.save({"online": {"w": torch.zeros(2)}}, path)
    assert checkpoint.read_checked(path) == path.read_bytes()


# -- train(): waiting for data and the shard's rate limit ------------------------------------


def test_train_returns_without_updates_while_replay_is_short_and_trains_once_it_fills():
    learner, store = make_learner()
    out = learner.train(3, wait_s=0.05)
    assert out["learner/updates_in_call"] == 0 and learner.steps == 0 and store.latest()[0] == 0
    learner.batches.replay.shards[0].insert([replay_payload(2 * B)])
    out = learner.train(3, wait_s=1.0)
    assert out["learner/updates_in_call"] == 3 and learner.steps == 3 and store.latest()[0] == 3


def test_train_waits_up_to_wait_s_for_data():
    import time

    learner, _ = make_learner()
    start = time.perf_counter()
    assert learner.train(3, wait_s=0.2)["learner/updates_in_call"] == 0
    assert 0.2 <= time.perf_counter() - start < 2.0


# Shard limit r = 2, m = 4, e = 4: a batch of B = 4 needs 2 I - S - 4 >= 8 - 4, i.e. S <= 2 I - 8.


def test_train_makes_exactly_the_updates_the_rate_limit_allows(monkeypatch):
    import time

    def no_sleep(seconds):
        raise AssertionError(f"train(wait_s=0) slept {seconds} s instead of returning")

    monkeypatch.setattr(time, "sleep", no_sleep)
    limit = SampleToInsertRatio(samples_per_insert=2.0, min_size=4, error_buffer=4.0)
    learner, store = make_learner(small_config(publish_every=1), rate_limit=limit)
    shard = learner.batches.replay.shards[0]
    # I = 8: batches at S = 0, 4, 8; S = 12 > 8 refused
    shard.insert([replay_payload(8)])
    out = learner.train(100, wait_s=0.0)
    assert out["learner/updates_in_call"] == 3 and learner.steps == 3 and store.latest()[0] == 3
    assert shard.rate_limit.samples == shard.stats()["samples"] == 12
    assert shard.stats()["rate_limited_samples"] >= 1
    assert learner.train(100, wait_s=0.0)["learner/updates_in_call"] == 0
    shard.insert([replay_payload(2)])  # I = 10: S <= 12 -> one more batch
    assert learner.train(100, wait_s=0.0)["learner/updates_in_call"] == 1
    assert learner.steps == 4 and shard.rate_limit.samples == 16
    assert learner.train(100, wait_s=0.0)["learner/updates_in_call"] == 0


def test_train_stops_at_max_steps_and_the_prefetched_batch_is_used_next():
    limit = SampleToInsertRatio(samples_per_insert=2.0, min_size=4, error_buffer=4.0)
    learner, _ = make_learner(rate_limit=limit)
    learner.batches.replay.shards[0].insert([replay_payload(8)])
    assert learner.train(2, wait_s=0.0)["learner/updates_in_call"] == 2
    assert learner.train(100, wait_s=0.0)["learner/updates_in_call"] == 1
    assert learner.steps == 3 and learner.batches.replay.shards[0].rate_limit.samples == 12


# -- CUDA (run where a GPU exists: CI has none, so these skip there) --------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_updates_match_cpu_updates_in_fp32():
    """Same weights, same batches, fp32: the CUDA learner's losses and gradient norms follow
    the CPU learner's (kernels differ, so close, not bit-identical)."""
    cpu, _ = make_learner(small_config(precision="fp32"))
    gpu, _ = make_learner(small_config(device="cuda", precision="fp32"))
    assert gpu.device.type == "cuda" and not gpu.bf16
    gpu.online.load_state_dict(cpu.online.state_dict())
    gpu.target.load_state_dict(cpu.target.state_dict())
    for seed in range(3):
        a, b = cpu.update(make_batch(seed)), gpu.update(to_time_major(make_arrays(seed), "cuda"))
        for key in ("loss/total", "loss/pg", "loss/value", "loss/model", "learner/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), (seed, key, a[key], b[key])
    assert all(p.device.type == "cuda" for p in gpu.online.parameters())


@needs_cuda
def test_cuda_compiled_updates_match_eager_updates():
    """compile 'auto' is on for CUDA: its updates follow the eager CUDA learner's."""
    eager, _ = make_learner(small_config(device="cuda", precision="fp32", compile="off"))
    compiled, _ = make_learner(small_config(device="cuda", precision="fp32", compile="auto"))
    assert compiled.compiled and not eager.compiled
    compiled.online.load_state_dict(eager.online.state_dict())
    compiled.target.load_state_dict(eager.target.state_dict())
    for seed in range(3):
        batch = to_time_major(make_arrays(seed), "cuda")
        a, b = eager.update(batch), compiled.update(batch)
        for key in ("loss/total", "loss/pg", "loss/value", "loss/model", "learner/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), (seed, key, a[key], b[key])


@needs_cuda
def test_cuda_auto_precision_is_bf16_and_learns_with_fp32_state():
    learner, _ = make_learner(small_config(device="cuda", precision="auto"))
    assert learner.bf16 == torch.cuda.is_bf16_supported()
    batch = to_time_major(make_arrays(0), "cuda")
    first = learner.update(batch)["loss/total"]
    for _ in range(30):
        last = learner.update(batch)["loss/total"]
    assert np.isfinite(first) and last < first - 0.1, (first, last)
    assert all(p.dtype == torch.float32 for p in learner.online.parameters())


@needs_cuda
def test_cuda_learner_trains_from_replay_and_publishes_cpu_weights():
    learner, store = make_learner(small_config(device="cuda"))
    learner.batches.replay.shards[0].insert([replay_payload(2 * B)])
    assert learner.train(4, wait_s=1.0)["learner/updates_in_call"] == 4
    version, payload = store.latest()
    weights = codec.decode_weights(payload)
    assert version == 4 and set(weights) == set(learner.online.state_dict())
    for name, value in learner.acting_network().state_dict().items():
        assert np.array_equal(weights[name], value.cpu().numpy()), name


@needs_cuda
def test_cuda_checkpoint_resumes_on_cpu_and_on_cuda():
    """A checkpoint written by a CUDA learner loads into a CPU learner (and back into CUDA):
    weights equal, counters equal, and both go on training."""
    source, _ = make_learner(small_config(device="cuda"))
    for seed in range(3):
        source.update(to_time_major(make_arrays(seed), "cuda"))
    data = source.checkpoint_bytes()
    for device in ("cpu", "cuda"):
        fresh, store = make_learner(small_config(device=device, seed=5))
        fresh.load_checkpoint_bytes(data)
        assert (fresh.steps, store.latest()[0]) == (3, 3)
        for name, value in source.online.state_dict().items():
            assert torch.equal(fresh.online.state_dict()[name].cpu(), value.cpu()), (device, name)
        assert np.isfinite(fresh.update(to_time_major(make_arrays(4), device))["loss/total"])


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_params_mode_scales_exactly_the_dynamics_gradients(scale):
    """--dynamics-grad params: after backward the learner multiplies g's parameter gradients by
    --dynamics-grad-scale and leaves every other gradient alone (compared with scale 1, hidden mode
    off in both: the loss and its raw gradients are then the same)."""
    grads = {}
    for run_scale in (1.0, scale):
        cfg = small_config(dynamics_grad="params", dynamics_grad_scale=run_scale, max_grad_norm=0.0)
        learner, _ = make_learner(cfg)
        seen = {}
        learner.optimizer.step = lambda seen=seen, learner=learner: seen.update(
            {
                name: p.grad.clone()
                for name, p in learner.online.named_parameters()
                if p.grad is not None
            }
        )
        learner.update(make_batch())
        grads[run_scale] = seen
    dynamics = {
        name
        for name, p in learner.online.named_parameters()
        if any(p is q for q in learner.online.dynamics_parameters())
    }
    assert dynamics and set(grads[1.0]) - dynamics, "both kinds of parameter must be present"
    for name, base in grads[1.0].items():
        want = base * scale if name in dynamics else base
        torch.testing.assert_close(grads[scale][name], want, rtol=0, atol=0, msg=name)


def test_repr_names_only_what_stays_true():
    """Ray's dashboard keeps the repr an actor had when its constructor returned."""
    learner, _ = make_learner()
    assert repr(learner) == "Learner(cpu)"
    learner.update(make_batch())
    assert learner.steps == 1 and repr(learner) == "Learner(cpu)"
