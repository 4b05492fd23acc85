"""msgpack codec (common/codec.py) and the sequence schema (common/sequence.py): exact round
trips, one-line CodecErrors for every kind of bad payload, no pickle, and a fuzz test that
the decoder only ever returns a well-formed sequence or raises CodecError."""

import io
import pickle
import tokenize
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import codec
from common.codec import CodecError
from common.sequence import (
    SequenceSpec,
    decode_batch,
    decode_sequence,
    encode_batch,
    encode_sequence,
)

ROOT = Path(__file__).resolve().parent.parent
T, A = 5, 3
IMAGE = SequenceSpec(length=T, obs_shape=(6, 7, 2), obs_dtype="uint8", num_actions=A)
VECTOR = SequenceSpec(length=T, obs_shape=(4,), obs_dtype="float32", num_actions=A)

# The schema written out by hand (not read back from SequenceSpec.fields), for IMAGE.
IMAGE_FIELDS = {
    "obs": ("uint8", (T + 1, 6, 7, 2)),
    "action": ("int32", (T,)),
    "reward": ("float32", (T,)),
    "behaviour": ("float32", (T, A)),
    "mask": ("bool", (T,)),
    "terminal": ("bool", (T,)),
    "truncated": ("bool", (T,)),
    "version": ("int64", (T,)),
}


def make_sequence(spec=IMAGE, seed=0, length=T):
    """A valid sequence with `length` real steps (the rest padding), every field non-trivial."""
    rng = np.random.default_rng(seed)
    if spec.obs_dtype == "uint8":
        obs = rng.integers(0, 256, size=(spec.length + 1,) + spec.obs_shape, dtype=np.uint8)
    else:
        obs = rng.normal(size=(spec.length + 1,) + spec.obs_shape).astype(np.float32)
    logits = rng.normal(size=(spec.length, spec.num_actions))
    behaviour = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    mask = np.arange(spec.length) < length
    terminal = np.zeros(spec.length, bool)
    truncated = np.zeros(spec.length, bool)
    if length < spec.length:
        terminal[length - 1] = True
    return {
        "obs": obs,
        "action": rng.integers(0, spec.num_actions, spec.length).astype(np.int32),
        "reward": rng.normal(size=spec.length).astype(np.float32),
        "behaviour": behaviour,
        "mask": mask,
        "terminal": terminal,
        "truncated": truncated,
        "version": np.full(spec.length, 2**40 + 7, np.int64),  # needs more than 32 bits
    }


def repack(payload, edit):
    """Unpack a payload, let `edit(message)` change it, pack it again."""
    message = msgpack.unpackb(payload, raw=False)
    edit(message)
    return msgpack.packb(message, use_bin_type=True)


def assert_one_line_error(excinfo, *needles):
    text = str(excinfo.value)
    assert "\n" not in text and text, text
    for needle in needles:
        assert needle in text, (needle, text)


def assert_well_formed(arrays):
    """Independent of the code under test: dtypes and shapes from IMAGE_FIELDS, values in range."""
    assert set(arrays) == set(IMAGE_FIELDS)
    for name, (dtype, shape) in IMAGE_FIELDS.items():
        assert arrays[name].dtype == np.dtype(dtype) and arrays[name].shape == shape, name
    assert np.isfinite(arrays["reward"]).all() and np.isfinite(arrays["behaviour"]).all()
    assert ((arrays["action"] >= 0) & (arrays["action"] < A)).all()
    assert ((arrays["behaviour"] >= 0) & (arrays["behaviour"] <= 1 + 1e-5)).all()
    assert arrays["mask"][0]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [IMAGE, VECTOR], ids=["uint8-image", "float32-vector"])
def test_sequence_round_trip_is_exact(spec):
    seq = make_sequence(spec, seed=1, length=3)
    out = decode_sequence(encode_sequence(seq), spec)
    assert set(out) == set(seq)
    for name, array in seq.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape, name
        assert out[name].tobytes() == array.tobytes(), name  # bit-exact
    assert out["version"][0] == 2**40 + 7
    assert out["obs"].flags.writeable  # torch.from_numpy needs that


def test_round_trip_of_every_allowed_dtype_and_odd_shapes():
    arrays = {
        "u8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "b": np.array([True, False, True]),
        "i32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
        "i64": np.array([[-(2**63)], [2**63 - 1]], np.int64),
        "f32": np.array([-0.0, 1e-45, 3.4e38, -1.5], np.float32),
        "scalar": np.array(2.5, np.float32),
        "np_scalar": np.int64(-3),  # 0-d arrays stay 0-d
        "empty": np.zeros((0, 3), np.float32),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
    }
    out = codec.decode(codec.encode("thing", arrays), "thing")
    for name, array in arrays.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape, name
        assert np.array_equal(out[name], array), name
    assert np.signbit(out["f32"][0])  # -0.0 survives


def test_batch_round_trip_keeps_the_leading_dimension():
    seqs = [make_sequence(IMAGE, seed=s) for s in range(3)]
    batch = {name: np.stack([s[name] for s in seqs]) for name in seqs[0]}
    out = decode_batch(encode_batch(batch), IMAGE)
    assert out["obs"].shape == (3, T + 1, 6, 7, 2)
    for name in batch:
        assert np.array_equal(out[name], batch[name]), name


def test_payload_bytes_are_little_endian_raw_arrays():
    payload = codec.encode("k", {"x": np.array([1, 256], np.int32)})
    message = msgpack.unpackb(payload, raw=False)
    assert message == {
        "schema": codec.SCHEMA_VERSION,
        "kind": "k",
        "arrays": {"x": ["int32", [2], b"\x01\x00\x00\x00\x00\x01\x00\x00"]},
    }


def test_encode_refuses_dtypes_outside_the_schema():
    with pytest.raises(CodecError) as excinfo:
        codec.encode("k", {"x": np.zeros(2, np.float64)})
    assert_one_line_error(excinfo, "'x'", "float64", "float32")
    with pytest.raises(CodecError):
        codec.encode("k", {"x": np.array([object()])})


# -- rejections ----------------------------------------------------------------------------


def good_payload():
    return encode_sequence(make_sequence(IMAGE, seed=3, length=4))


def test_truncated_payloads_are_rejected():
    payload = good_payload()
    for cut in (0, 1, 10, len(payload) // 2, len(payload) - 1):
        with pytest.raises(CodecError) as excinfo:
            decode_sequence(payload[:cut], IMAGE)
        assert_one_line_error(excinfo, "msgpack")


def test_trailing_bytes_are_rejected():
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(good_payload() + b"\x00", IMAGE)
    assert_one_line_error(excinfo, "extra data")


def test_oversized_payloads_are_rejected_before_parsing():
    payload = good_payload()
    # exactly at the limit is fine
    assert codec.decode(payload, "sequence", max_bytes=len(payload))
    with pytest.raises(CodecError) as excinfo:
        codec.decode(payload, "sequence", max_bytes=len(payload) - 1)
    assert_one_line_error(excinfo, str(len(payload)), str(len(payload) - 1))
    # The default limit is the module constant, and it is a sane size.
    assert codec.decode.__defaults__[0] == codec.MAX_PAYLOAD_BYTES
    assert 1 << 20 <= codec.MAX_PAYLOAD_BYTES <= 1 << 31


def test_an_array_longer_than_the_limit_is_rejected_inside_msgpack():
    # A bin header claiming 2**31 bytes must not make the decoder allocate them.
    head = msgpack.packb({"schema": 1, "kind": "sequence"})
    # fixmap of 2 -> make it 3 with 'arrays'
    assert head[0] == 0x82
    evil = b"\x83" + head[1:] + b"\xa6arrays\x81\xa3obs\x93\xa5uint8\x91\x00\xc6\x80\x00\x00\x00"
    with pytest.raises(CodecError):
        codec.decode(evil, "sequence", max_bytes=1 << 20)


@pytest.mark.parametrize("version", [0, 2, "1", None, [1]])
def test_wrong_schema_version_is_rejected(version):
    payload = repack(good_payload(), lambda m: m.update(schema=version))
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(payload, IMAGE)
    assert_one_line_error(excinfo, "schema version", repr(version), str(codec.SCHEMA_VERSION))


def test_wrong_kind_is_rejected():
    seq = make_sequence()
    batch = {k: v[None] for k, v in seq.items()}
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_batch(batch), IMAGE)
    assert_one_line_error(excinfo, "'batch'", "'sequence'")


def test_dtype_outside_the_schema_is_rejected():
    def edit(m):
        m["arrays"]["reward"][0] = "float64"
        m["arrays"]["reward"][2] = np.zeros(T, np.float64).tobytes()

    with pytest.raises(CodecError) as excinfo:
        decode_sequence(repack(good_payload(), edit), IMAGE)
    assert_one_line_error(excinfo, "'reward'", "'float64'")


def test_allowed_dtype_in_the_wrong_field_is_rejected():
    seq = dict(make_sequence(), reward=np.zeros(T, np.int32))
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, "'reward'", "int32", "float32")
    # float image, uint8 expected
    seq = dict(make_sequence(), obs=make_sequence()["obs"].astype(np.float32))
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, "'obs'", "float32", "uint8")


@pytest.mark.parametrize(
    "name, shape",
    [
        ("obs", (T, 6, 7, 2)),  # bootstrap observation missing
        ("obs", (T + 1, 7, 6, 2)),  # transposed image
        ("behaviour", (T, A + 1)),  # wrong number of actions
        ("action", (T, 1)),  # extra dimension
        ("mask", (T + 1,)),
    ],
)
def test_wrong_shape_is_rejected(name, shape):
    seq = make_sequence()
    seq[name] = np.zeros(shape, seq[name].dtype)
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, repr(name), str(shape))


def test_byte_count_that_does_not_match_the_shape_is_rejected():
    def edit(m):
        m["arrays"]["reward"][2] = m["arrays"]["reward"][2][:-1]

    with pytest.raises(CodecError) as excinfo:
        decode_sequence(repack(good_payload(), edit), IMAGE)
    assert_one_line_error(excinfo, "'reward'", f"holds {4 * T - 1} bytes", f"need {4 * T}")


@pytest.mark.parametrize(
    "shape",
    [
        [2**30, 2**30, 2**30, 4],  # product wraps int64 to 0 (was a ValueError)
        [0, 2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1],  # zero-size but "too big" for numpy
        [0] * 70,  # more dims than numpy supports
        [-1, 5],
        [2**31],
        [1.5],
        ["3"],
        [True, None],
    ],
)
def test_absurd_shapes_are_codec_errors(shape):
    payload = repack(
        good_payload(),
        lambda m: (
            m["arrays"]["obs"].__setitem__(1, shape) or m["arrays"]["obs"].__setitem__(2, b"")
        ),
    )
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(payload, IMAGE)
    assert_one_line_error(excinfo, "'obs'")


@pytest.mark.parametrize(
    "name, index, value",
    [
        ("reward", 2, np.nan),
        ("reward", 0, np.inf),
        ("behaviour", (1, 2), -np.inf),
        ("obs", (0, 1), np.nan),
    ],
)
def test_non_finite_floats_are_rejected(name, index, value):
    spec = VECTOR if name == "obs" else IMAGE
    seq = make_sequence(spec)
    seq[name][index] = value
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), spec)
    assert_one_line_error(excinfo, repr(name), "NaN or inf")


def test_non_finite_values_in_padding_are_rejected_too():
    seq = make_sequence(length=2)
    seq["reward"][-1] = np.nan  # a padded step: still never stored
    with pytest.raises(CodecError):
        decode_sequence(encode_sequence(seq), IMAGE)


@pytest.mark.parametrize("missing", ["obs", "behaviour", "version"])
def test_missing_field_is_rejected_and_named(missing):
    seq = make_sequence()
    del seq[missing]
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, f"missing fields [{missing!r}]")


def test_unexpected_field_is_rejected_and_named():
    seq = dict(make_sequence(), logits=np.zeros((T, A), np.float32))
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, "unexpected fields ['logits']")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s["action"].__setitem__(1, A), f"[0, {A})"),
        (lambda s: s["action"].__setitem__(0, -1), f"[0, {A})"),
        (lambda s: s["behaviour"].__setitem__((0, 0), 1.5), "behaviour"),
        (lambda s: s["behaviour"].__setitem__((2, 1), -0.1), "behaviour"),
        (lambda s: s["mask"].__setitem__(slice(None), [True, False, True, False, False]), "prefix"),
        (lambda s: s["mask"].__setitem__(slice(None), False), "no real step"),
    ],
)
def test_semantically_invalid_sequences_are_rejected(edit, needle):
    seq = make_sequence()
    edit(seq)
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(encode_sequence(seq), IMAGE)
    assert_one_line_error(excinfo, needle)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        b"\xff" * 64,
        msgpack.packb([1, 2, 3]),
        msgpack.packb("sequence"),
        msgpack.packb({"schema": 1, "kind": "sequence"}),
        msgpack.packb({1: 2}),
        msgpack.packb({"schema": 1, "kind": "sequence", "arrays": [1]}),
        msgpack.packb({"schema": 1, "kind": "sequence", "arrays": {"obs": "uint8"}}),
        msgpack.packb({"schema": 1, "kind": "sequence", "arrays": {"obs": ["uint8", [1], "text"]}}),
        msgpack.packb({"schema": 1, "kind": "sequence", "arrays": {}, "extra": 1}),
        msgpack.packb(msgpack.ExtType(1, b"\x80\x04")),
    ],
)
def test_non_msgpack_and_wrongly_structured_payloads_are_rejected(garbage):
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(garbage, IMAGE)
    assert_one_line_error(excinfo)


@pytest.mark.parametrize("payload", [None, "a string", 12, [b"bytes"]])
def test_non_bytes_payloads_are_rejected(payload):
    with pytest.raises(CodecError) as excinfo:
        decode_sequence(payload, IMAGE)
    assert_one_line_error(excinfo, "bytes", type(payload).__name__)


def test_weights_with_the_wrong_tensor_names_are_rejected():
    payload = codec.encode_weights({"a": np.zeros(2, np.float32), "b": np.ones(1, np.float32)})
    assert set(codec.decode_weights(payload, {"a", "b"})) == {"a", "b"}
    with pytest.raises(CodecError) as excinfo:
        codec.decode_weights(payload, {"a", "c"})
    assert_one_line_error(excinfo, "'b'", "'c'")


# -- no pickle -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    ["common/codec.py", "common/sequence.py", "transport/weights.py", "transport/ray_weights.py"],
)
def test_codec_modules_use_no_pickle(module):
    """Source with docstrings and comments removed must not mention pickle or msgpack object hooks."""
    source = (ROOT / module).read_text()
    code = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.STRING, tokenize.COMMENT)
    ]
    text = " ".join(code).lower()
    for word in (
        "pickle",
        "dill",
        "marshal",
        "ext_hook",
        "object_hook",
        "object_pairs_hook",
        "eval",
        "exec",
    ):
        assert word not in text.split() and f"{word}(" not in text, (module, word)
    assert "import pickle" not in source and "cloudpickle" not in source


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_payloads_are_rejected(protocol):
    seq = make_sequence()
    for obj in (seq, {"schema": 1, "kind": "sequence", "arrays": seq}):
        with pytest.raises(CodecError):
            decode_sequence(pickle.dumps(obj, protocol=protocol), IMAGE)


# -- fuzz ----------------------------------------------------------------------------------

VALID = [
    encode_sequence(make_sequence(IMAGE, seed=s, length=n)) for s, n in ((0, T), (1, 1), (2, 3))
]


def check_decoder(payload):
    try:
        arrays = decode_sequence(payload, IMAGE)
    except CodecError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert_well_formed(arrays)
    return arrays


@st.composite
def mutated(draw):
    payload = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete"]))
        if not payload:
            break
        i = draw(st.integers(0, len(payload) - 1))
        if op == "flip":
            payload[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            payload[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xDC, 0xDF, 0xFF]))
        elif op == "truncate":
            del payload[i:]
        elif op == "extend":
            payload += draw(st.binary(min_size=1, max_size=16))
        elif op == "insert":
            payload[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del payload[i : i + draw(st.integers(1, 8))]
    return bytes(payload)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_never_raise_anything_but_codec_error(payload):
    check_decoder(payload)


@FUZZ
@given(mutated())
def test_fuzz_mutated_valid_payloads_decode_well_formed_or_raise_codec_error(payload):
    check_decoder(payload)


# Structured mutations reach the array checks, which random bytes seldom get past.
MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=32),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    st.sampled_from(sorted(IMAGE_FIELDS)), st.integers(0, 2), MSGPACK_VALUES, st.sampled_from(VALID)
)
def test_fuzz_structured_edits_decode_well_formed_or_raise_codec_error(name, part, value, payload):
    def edit(message):
        message["arrays"][name][part] = value

    check_decoder(repack(payload, edit))


@FUZZ
@given(
    st.sampled_from(sorted(IMAGE_FIELDS)),
    st.lists(st.integers(-3, 2**32), max_size=6),
    st.sampled_from(VALID),
)
def test_fuzz_random_shapes_decode_well_formed_or_raise_codec_error(name, shape, payload):
    check_decoder(repack(payload, lambda m: m["arrays"][name].__setitem__(1, shape)))


def test_fuzz_inputs_include_payloads_that_still_decode():
    """The mutation fuzzer is not only testing the msgpack parser: flips inside array bytes
    yield valid sequences that differ from the original."""
    payload = bytearray(VALID[0])
    raw = make_sequence(IMAGE, seed=0)["obs"].tobytes()
    start = bytes(payload).index(raw[:32])
    payload[start + 5] ^= 0x10
    out = check_decoder(bytes(payload))
    assert out is not None and not np.array_equal(out["obs"], make_sequence(IMAGE, seed=0)["obs"])
