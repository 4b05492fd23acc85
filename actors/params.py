"""Weight flow: the learner publishes (version, weights) once; actors and the evaluator fetch it.

The payload is the msgpack-encoded weight dict (common.codec), so no pickle crosses
from the learner to actors. With Ray the learner `ray.put`s the payload once per
publish and hands the store a reference wrapped in a list (so Ray passes the reference
instead of resolving it); every actor then reads the same object from the object store.
Without Ray the store keeps the bytes themselves.
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from common import codec


def state_to_numpy(module: torch.nn.Module) -> Dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: torch.nn.Module, arrays: Dict[str, np.ndarray]) -> None:
    """Copy decoded arrays into module; CodecError if names or shapes do not match."""
    state = module.state_dict()
    if set(arrays) != set(state):
        raise codec.CodecError(f"weights do not match the network: differing tensors {sorted(set(arrays) ^ set(state))}")
    for name, tensor in state.items():
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise codec.CodecError(f"weight {name!r} has shape {arrays[name].shape}; the network needs {tuple(tensor.shape)}")
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


class WeightPublisher:
    """Learner side: encode once, put once, tell the store."""

    def __init__(self, store, remote: bool = False):
        self.store, self.remote = store, remote

    def publish(self, version: int, module: torch.nn.Module) -> None:
        payload = codec.encode_weights(state_to_numpy(module))
        if self.remote:
            import ray
            self.store.publish.remote(version, [ray.put(payload)])
        else:
            self.store.publish(version, payload)


class WeightClient:
    """Actor side: `poll()` never blocks on the learner. With Ray it keeps one request to
    the store in flight and picks the answer up once it has arrived."""

    def __init__(self, store, remote: bool = False):
        self.store, self.remote = store, remote
        self.version = -1
        self.pulls = 0
        self._pending = None

    def _resolve(self, answer) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
        version, payload = answer
        if version <= self.version or payload is None:
            return None
        if self.remote:
            import ray
            payload = ray.get(payload[0])
        self.version = version
        self.pulls += 1
        return version, codec.decode_weights(payload)

    def request(self) -> None:
        """Ask for the newest weights (no-op locally or while a request is in flight)."""
        if self.remote and self._pending is None:
            self._pending = self.store.latest.remote()

    def poll(self) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
        """Newer (version, arrays) if available now, else None."""
        if not self.remote:
            return self._resolve(self.store.latest())
        if self._pending is None:
            return None
        import ray
        ready, _ = ray.wait([self._pending], timeout=0)
        if not ready:
            return None
        pending, self._pending = self._pending, None
        try:
            answer = ray.get(pending)
            return self._resolve(answer)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
            # The store is restarting (its node left): ask again later; the learner republishes.
            return None

    def newest(self, timeout_s: float = 10.0) -> Optional[Tuple[int, Dict[str, np.ndarray]]]:
        """Ask the store and wait for its answer (one round trip, unlike poll): the newest
        (version, arrays) if newer than what this client has, else None."""
        if self.remote:
            import ray
            self.request()
            ray.wait([self._pending], timeout=timeout_s)
        return self.poll()

    def wait(self, timeout_s: float = 120.0) -> Tuple[int, Dict[str, np.ndarray]]:
        """Block until some version has been published (start-up)."""
        import time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.request()
            got = self.poll()
            if got is not None:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"no weights were published within {timeout_s} s")
