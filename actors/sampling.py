"""Sampling actions from a batch of categorical distributions, in numpy.

Shape legend: B rows (envs), A actions.

    a_b = min{ k : sum_{j<=k} p_bj > u_b },   u_b ~ U[0, 1)

(inverse-CDF sampling). One call costs a few microseconds for B = 16, against ~50-70 us for
torch.multinomial with a generator, which matters on the actor's per-step hot path.
"""

import numpy as np


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """probs [B, A] (rows sum to 1) -> actions [B] int64, each row drawn independently.

    u is scaled by each row's total, so float rounding in the cumulative sum can never
    select past the last action, and actions with probability 0 are never drawn."""
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"probs must be [B, A] with A >= 1, got shape {probs.shape}")
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return (cdf <= u).sum(axis=1).astype(np.int64)
