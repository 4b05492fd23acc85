"""msgpack codec for everything that crosses a process boundary: sequences, batches, weights.

A payload is a msgpack map
  {"schema": SCHEMA_VERSION, "kind": str, "arrays": {name: [dtype, shape, raw bytes]}}
Arrays travel as raw little-endian bytes with their dtype and shape; no pickle.
`decode` validates everything and raises CodecError with a one-line reason; callers
count and drop such payloads, never store them.
"""

import math
import sys

import msgpack
import numpy as np

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 1 << 30
ALLOWED_DTYPES = ("uint8", "bool", "int32", "int64", "float32")


class CodecError(ValueError):
    """A payload that is malformed, truncated, of a wrong schema/dtype/shape, or non-finite."""


# dtype -> name, native byte order
_NATIVE_NAMES = {np.dtype(name): name for name in ALLOWED_DTYPES}
_LITTLE = sys.byteorder == "little"


def encode(kind: str, arrays: dict[str, np.ndarray]) -> bytes:
    packed = {}
    for name, array in arrays.items():
        array = np.asarray(array)  # not ascontiguousarray: it turns 0-d arrays into shape (1,)
        # fast path: no byte swap needed
        dtype_name = _NATIVE_NAMES.get(array.dtype) if _LITTLE else None
        if dtype_name is None:
            dtype_name = array.dtype.name
            if dtype_name not in ALLOWED_DTYPES:
                raise CodecError(
                    f"array {name!r} has dtype {dtype_name}; allowed: {', '.join(ALLOWED_DTYPES)}"
                )
            array = array.astype(array.dtype.newbyteorder("<"))
        packed[name] = [dtype_name, list(array.shape), array.tobytes()]
    return msgpack.packb(
        {"schema": SCHEMA_VERSION, "kind": kind, "arrays": packed}, use_bin_type=True
    )


def decode(
    payload: bytes,
    kind: str,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    check_finite: bool = True,
) -> dict[str, np.ndarray]:
    """Inverse of `encode`; checks size, structure, schema, kind, dtypes, byte counts and finiteness."""
    return decode_kind(payload, (kind,), max_bytes, check_finite)[1]


def decode_kind(
    payload: bytes, kinds: tuple, max_bytes: int = MAX_PAYLOAD_BYTES, check_finite: bool = True
):
    """`decode` for a payload of one of several kinds: returns (kind, arrays)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise CodecError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=max_bytes)
    except Exception as exc:  # msgpack raises several types for truncated / garbage input
        raise CodecError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(message, dict) or set(message) != {"schema", "kind", "arrays"}:
        raise CodecError("payload must be a map with keys 'schema', 'kind', 'arrays'")
    if message["schema"] != SCHEMA_VERSION:
        raise CodecError(
            f"schema version {message['schema']!r} is not supported; expected {SCHEMA_VERSION}"
        )
    if not isinstance(message["kind"], str) or message["kind"] not in kinds:
        raise CodecError(
            f"payload kind {message['kind']!r} where {' or '.join(map(repr, kinds))} was expected"
        )
    if not isinstance(message["arrays"], dict):
        raise CodecError("'arrays' must be a map")
    arrays = {}
    for name, entry in message["arrays"].items():
        arrays[name] = _decode_array(name, entry, check_finite)
    return message["kind"], arrays


def _decode_array(name, entry, check_finite: bool) -> np.ndarray:
    if not (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[1], list)
        and isinstance(entry[2], bytes)
    ):
        raise CodecError(f"array {name!r} must be [dtype, shape, bytes]")
    dtype_name, shape, raw = entry
    if dtype_name not in ALLOWED_DTYPES:
        raise CodecError(
            f"array {name!r} has dtype {dtype_name!r}; allowed: {', '.join(ALLOWED_DTYPES)}"
        )
    if not all(isinstance(d, int) and 0 <= d < 1 << 31 for d in shape):
        raise CodecError(f"array {name!r} has an invalid shape {shape!r}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod could wrap around to 0
    if len(raw) != expected:
        raise CodecError(
            f"array {name!r} holds {len(raw)} bytes; dtype {dtype_name} and shape {shape} need {expected}"
        )
    # bytearray: the decoded arrays own writable memory (torch.from_numpy needs that).
    try:  # numpy refuses > 64 dims, and zero-size shapes whose other dims overflow
        array = (
            np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).astype(dtype_name, copy=False)
        )
    except ValueError as exc:
        raise CodecError(f"array {name!r} cannot have shape {shape!r} ({exc})") from None
    if check_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CodecError(f"array {name!r} contains NaN or inf")
    return array


def check_fields(arrays: dict[str, np.ndarray], expected: dict[str, tuple], what: str) -> None:
    """expected: name -> (dtype name, shape with None for free dims). Raises CodecError."""
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise CodecError(
            f"{what} is missing fields {missing} and has unexpected fields {extra}; "
            f"expected {sorted(expected)}"
        )
    for name, (dtype_name, shape) in expected.items():
        array = arrays[name]
        if array.dtype.name != dtype_name:
            raise CodecError(
                f"{what} field {name!r} has dtype {array.dtype.name}; expected {dtype_name}"
            )
        if len(array.shape) != len(shape) or any(
            s is not None and s != d for s, d in zip(shape, array.shape)
        ):
            raise CodecError(
                f"{what} field {name!r} has shape {tuple(array.shape)}; expected {_fmt(shape)}"
            )


def _fmt(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def encode_weights(state: dict[str, "np.ndarray"]) -> bytes:
    return encode("weights", state)


def decode_weights(payload: bytes, names: set | None = None) -> dict[str, np.ndarray]:
    arrays = decode(payload, "weights")
    if names is not None and set(arrays) != set(names):
        raise CodecError(
            f"weights have tensors {sorted(set(arrays) ^ set(names))} that do not match the network"
        )
    return arrays
