"""The learner's batch: replay's batch-major numpy arrays as the time-major torch tensors
that common/losses.py takes (its docstring lists the fields and shapes).

Shape legend: B sequences, T steps, O observation shape. Kept apart from common/sequence.py
so that replay shards and the weight store never import torch (a second or two of start-up
per process on a small machine).
"""

import numpy as np
import torch


def to_time_major(arrays: dict[str, np.ndarray], device="cpu") -> dict[str, torch.Tensor]:
    """Batch-major numpy batch [B, T, ...] -> time-major torch tensors [T, B, ...] for the loss."""
    non_blocking = torch.device(device).type == "cuda"

    def move(x, dtype=None):
        t = torch.from_numpy(np.ascontiguousarray(x))
        if non_blocking:
            t = t.pin_memory()
        t = t.to(device, non_blocking=non_blocking)
        t = t.transpose(0, 1)
        return t.to(dtype) if dtype is not None else t

    return {
        "obs": move(arrays["obs"]),
        "action": move(arrays["action"], torch.int64),
        "reward": move(arrays["reward"]),
        "behaviour": move(arrays["behaviour"]),
        "mask": move(arrays["mask"], torch.float32),
        "terminal": move(arrays["terminal"], torch.float32),
    }
