"""The trajectory sequence: what actors produce, replay stores and the learner consumes.

Shape legend: T steps, B sequences, A actions, O observation shape.

One sequence (batch-major when stacked into a batch [B, ...]):
  obs        [T+1, *O]  obs dtype (float32 vectors, uint8 images); obs[L] is the final
                        observation when the episode ended at step L-1 (L <= T)
  action     [T]        int32
  reward     [T]        float32
  behaviour  [T, A]     float32, mu(. | s_t) of the acting policy
  mask       [T]        bool, True for real steps (a prefix), False for padding
  terminal   [T]        bool, step t reached a true terminal state
  truncated  [T]        bool, step t hit a time limit (bootstraps)
  version    [T]        int64, policy version that chose a_t
"""

from dataclasses import dataclass

import numpy as np

from common import codec

SEQUENCE_KIND = "sequence"
BATCH_KIND = "batch"
SEQUENCES_KIND = "sequences"  # several sequences stacked [N, ...]: what actors send to replay


@dataclass(frozen=True)
class SequenceSpec:
    length: int  # T
    obs_shape: tuple
    obs_dtype: str  # 'float32' or 'uint8'
    num_actions: int

    @classmethod
    def for_env(cls, length: int, info) -> "SequenceSpec":
        """The spec of sequences of `length` steps of an env described by common.envs.EnvInfo;
        it also serves Config.network_spec (obs_shape, obs_dtype, num_actions)."""
        return cls(length, tuple(info.obs_shape), info.obs_dtype, info.num_actions)

    def fields(self, leading=()) -> dict[str, tuple]:
        T, A = self.length, self.num_actions
        lead = tuple(leading)
        return {
            "obs": (self.obs_dtype, lead + (T + 1,) + tuple(self.obs_shape)),
            "action": ("int32", lead + (T,)),
            "reward": ("float32", lead + (T,)),
            "behaviour": ("float32", lead + (T, A)),
            "mask": ("bool", lead + (T,)),
            "terminal": ("bool", lead + (T,)),
            "truncated": ("bool", lead + (T,)),
            "version": ("int64", lead + (T,)),
        }

    def empty(self, leading=()) -> dict[str, np.ndarray]:
        return {
            name: np.zeros(shape, dtype) for name, (dtype, shape) in self.fields(leading).items()
        }


def check_sequence_values(arrays: dict[str, np.ndarray], spec: SequenceSpec, what: str) -> None:
    """Semantic checks beyond dtype and shape: action range, probabilities, mask prefix."""
    action, mask = arrays["action"], arrays["mask"]
    if ((action < 0) | (action >= spec.num_actions)).any():
        raise codec.CodecError(f"{what} has actions outside [0, {spec.num_actions})")
    behaviour = arrays["behaviour"]
    if ((behaviour < 0) | (behaviour > 1.0 + 1e-5)).any():
        raise codec.CodecError(f"{what} has behaviour probabilities outside [0, 1]")
    # mask must be a prefix: never False followed by True
    if (np.diff(mask.astype(np.int8), axis=-1) > 0).any():
        raise codec.CodecError(f"{what} mask is not a prefix of real steps")
    if not mask[..., 0].all():
        raise codec.CodecError(f"{what} has no real step")


# what a sequence's non-finite values are counted as (summary.json faults: nonfinite_<kind>)
NONFINITE_FIELDS = {"obs": "obs", "reward": "reward", "behaviour": "probabilities"}


def nonfinite_kinds(arrays: dict[str, np.ndarray]) -> list[str]:
    """The kinds of values (obs, reward, probabilities) that hold NaN or inf in one sequence:
    the actor drops such a sequence alone and counts it, where replay's validation would drop
    the whole payload of stacked sequences around it."""
    return [
        kind
        for name, kind in NONFINITE_FIELDS.items()
        if arrays[name].dtype.kind == "f" and not np.isfinite(arrays[name]).all()
    ]


def encode_sequence(arrays: dict[str, np.ndarray]) -> bytes:
    return codec.encode(SEQUENCE_KIND, arrays)


def decode_sequence(payload: bytes, spec: SequenceSpec) -> dict[str, np.ndarray]:
    """Decode and fully validate one sequence payload (CodecError on any problem)."""
    arrays = codec.decode(payload, SEQUENCE_KIND)
    codec.check_fields(arrays, spec.fields(), "sequence")
    check_sequence_values(arrays, spec, "sequence")
    return arrays


def encode_sequences(sequences: list[dict[str, np.ndarray]]) -> bytes:
    """Stack N sequences into one payload [N, ...]: one encode, one message, one validation."""
    names = sequences[0].keys()
    return codec.encode(
        SEQUENCES_KIND, {name: np.stack([seq[name] for seq in sequences]) for name in names}
    )


def decode_sequences(payload: bytes, spec: SequenceSpec) -> dict[str, np.ndarray]:
    """Decode and fully validate a payload of stacked sequences [N, ...] or of one sequence
    (returned as N = 1). CodecError on any problem: the payload is then dropped whole."""
    kind, arrays = codec.decode_kind(payload, (SEQUENCES_KIND, SEQUENCE_KIND))
    if kind == SEQUENCE_KIND:
        codec.check_fields(arrays, spec.fields(), "sequence")
        arrays = {name: array[None] for name, array in arrays.items()}
    codec.check_fields(arrays, spec.fields(leading=(None,)), "sequences")
    check_sequence_values(arrays, spec, "sequences")
    return arrays


def encode_batch(arrays: dict[str, np.ndarray]) -> bytes:
    return codec.encode(BATCH_KIND, arrays)


def decode_batch(payload: bytes, spec: SequenceSpec) -> dict[str, np.ndarray]:
    arrays = codec.decode(payload, BATCH_KIND)
    codec.check_fields(arrays, spec.fields(leading=(None,)), "batch")
    return arrays
