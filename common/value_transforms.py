"""Value transform h (MuZero / Muesli) and two-hot categorical encoding.

Shape legend: `...` any leading shape, S support bins.

Value and reward heads predict a categorical distribution over an integer
support [-S_max, S_max] in the *transformed* space h(x). A scalar target x is
encoded as two-hot(h(x)); a prediction is decoded as h^-1(E[support]).
"""

import torch

EPSILON = 1e-3


def h(x: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x   (Pohlen et al. 2018).

    Computed as sign(x) |x| / (sqrt(|x| + 1) + 1) + eps x, the same value without the
    subtraction that cancels in float32 for small |x|.
    """
    return torch.sign(x) * torch.abs(x) / (torch.sqrt(torch.abs(x) + 1.0) + 1.0) + eps * x


def h_inv(y: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Closed-form inverse of h:

    h^-1(y) = sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1).

    Computed without subtractions (they cancel in float32): with u = sqrt(|x| + 1) - 1,
    |x| = u (u + 2) and h solves eps u^2 + (1 + 2 eps) u - |y| = 0, whose root is
    u = 2 |y| / (1 + 2 eps + s),  s = sqrt(1 + 4 eps (|y| + 1 + eps)),
    so h^-1(y) = sign(y) u (u + 2).
    """
    s = torch.sqrt(1.0 + 4.0 * eps * (torch.abs(y) + 1.0 + eps))
    u = 2.0 * torch.abs(y) / (1.0 + 2.0 * eps + s)
    return torch.sign(y) * u * (u + 2.0)


def support(s_max: int, device=None) -> torch.Tensor:
    """Integer support [-s_max, ..., s_max] as float32, shape [2 s_max + 1]."""
    return torch.arange(-s_max, s_max + 1, dtype=torch.float32, device=device)


def two_hot(y: torch.Tensor, s_max: int) -> torch.Tensor:
    """Encode y [...] as probabilities [..., S] on the two neighbouring integer bins.

    y is clipped to [-s_max, s_max]; with lo = floor(y): p[lo] = 1 - (y - lo),
    p[lo + 1] = y - lo, so sum_i p_i * support_i == y exactly (up to float error).
    """
    num_bins = 2 * s_max + 1
    y = torch.clamp(y, -s_max, s_max)
    # NaN must stay in the probabilities (a non-finite loss the learner skips), not become an index
    lo = torch.floor(torch.nan_to_num(y, nan=0.0))
    frac = y - lo
    lo_idx = (lo + s_max).long()
    hi_idx = torch.clamp(lo_idx + 1, max=num_bins - 1)
    probs = torch.zeros(*y.shape, num_bins, dtype=y.dtype, device=y.device)
    probs.scatter_add_(-1, lo_idx.unsqueeze(-1), (1.0 - frac).unsqueeze(-1))
    probs.scatter_add_(-1, hi_idx.unsqueeze(-1), frac.unsqueeze(-1))
    return probs


def from_two_hot(probs: torch.Tensor, s_max: int) -> torch.Tensor:
    """Expected value of a distribution [..., S] over the integer support -> [...]."""
    if probs.shape[-1] != 2 * s_max + 1:
        raise ValueError(
            f"expected {2 * s_max + 1} bins for s_max={s_max}, got shape {tuple(probs.shape)}"
        )
    return probs @ support(s_max, probs.device).to(probs.dtype)  # one matrix-vector product


def scalar_to_categorical(x: torch.Tensor, s_max: int) -> torch.Tensor:
    """Target distribution for a raw scalar x: two_hot(h(x)), shape [..., S]."""
    return two_hot(h(x), s_max)


def categorical_to_scalar(logits: torch.Tensor, s_max: int) -> torch.Tensor:
    """Raw scalar from head logits [..., S]: h^-1(E_softmax[support])."""
    return h_inv(from_two_hot(torch.softmax(logits, -1), s_max))


def two_hot_cross_entropy(logits: torch.Tensor, y: torch.Tensor, s_max: int) -> torch.Tensor:
    """-sum_i two_hot(y)_i log_softmax(logits)_i  [...] for logits [..., S], y [...] (already
    transformed by h). two_hot(y) has at most two non-zero bins, lo = floor(y) and lo + 1, so
    this reads those two: -((1 - f) ls[lo] + f ls[lo + 1]), f = y - lo, without building the
    [..., S] distribution. NaN in y stays NaN (a non-finite loss the learner skips)."""
    y = torch.clamp(y, -s_max, s_max)
    lo = torch.floor(torch.nan_to_num(y, nan=0.0))
    frac = y - lo
    lo_idx = (lo + s_max).long()
    bins = torch.stack([lo_idx, torch.clamp(lo_idx + 1, max=2 * s_max)], -1)  # [..., 2]
    weights = torch.stack([1.0 - frac, frac], -1)
    return -(torch.log_softmax(logits, -1).gather(-1, bins) * weights).sum(-1)
