"""Weight flow: the learner publishes (version, weights) once; actors and the evaluator fetch it.

The payload is the msgpack-encoded weight dict (common.codec), so no pickle crosses from the
learner to actors. The classes here are the in-process transport: the store is a plain
WeightStore in this process, which keeps the bytes themselves, and a fetch answers at once.
transport/ray_weights.py has the Ray transport behind the same methods.
"""

import time

import numpy as np
import torch

from common import codec


def state_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy decoded arrays into module; CodecError if names or shapes do not match."""
    state = module.state_dict()
    if set(arrays) != set(state):
        raise codec.CodecError(
            f"weights do not match the network: differing tensors {sorted(set(arrays) ^ set(state))}"
        )
    for name, tensor in state.items():
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise codec.CodecError(
                f"weight {name!r} has shape {arrays[name].shape}; the network needs {tuple(tensor.shape)}"
            )
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


class WeightPublisher:
    """Learner side: encode once, hand the payload to the store."""

    def __init__(self, store):
        self.store = store

    def publish(self, version: int, module: torch.nn.Module) -> None:
        self._send(version, codec.encode_weights(state_to_numpy(module)))

    def _send(self, version: int, payload: bytes) -> None:
        self.store.publish(version, payload)


class WeightClient:
    """Actor side: `request()` asks for the newest weights, `poll()` returns them once they are
    here and never blocks on the learner. In-process the store answers at once, so `poll()`
    reads it and `request()` has nothing to start."""

    def __init__(self, store):
        self.store = store
        self.version = -1
        self.pulls = 0

    def _accept(self, version: int, payload) -> tuple[int, dict[str, np.ndarray]] | None:
        """(version, arrays) of a store's answer if newer than what this client has, else None."""
        if version <= self.version or payload is None:
            return None
        payload = self._bytes(payload)
        self.version = version
        self.pulls += 1
        return version, codec.decode_weights(payload)

    def _bytes(self, payload) -> bytes:
        """The encoded weights of what the store holds (in-process: the bytes themselves)."""
        return payload

    def request(self) -> None:
        """Ask for the newest weights (in-process: nothing to start)."""

    def poll(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """Newer (version, arrays) if available now, else None."""
        return self._accept(*self.store.latest())

    def newest(self, timeout_s: float = 10.0) -> tuple[int, dict[str, np.ndarray]] | None:
        """Ask the store and wait for its answer (one round trip, unlike poll): the newest
        (version, arrays) if newer than what this client has, else None."""
        return self.poll()

    def wait(self, timeout_s: float = 120.0) -> tuple[int, dict[str, np.ndarray]]:
        """Block until some version has been published (start-up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.request()
            got = self.poll()
            if got is not None:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"no weights were published within {timeout_s} s")
