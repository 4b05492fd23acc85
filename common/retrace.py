"""Retrace value targets (Munos et al. 2016) over time-major sequences.

Shape legend: T time steps, B batch.

Inputs (all float tensors):
  r_t        [T, B]    reward after action a_t
  discount_t [T, B]    gamma, or 0 where step t reached a true terminal state
                       (a time-limit truncation keeps gamma: it bootstraps)
  v_t        [T+1, B]  E_pi q(s_t, .) for s_0 .. s_T (s_T bootstraps): the state value
  c_t        [T, B]    trace coefficient of step t, lambda * min(1, pi(a_t|s_t) / mu(a_t|s_t));
                       set it to 0 for padded steps to cut the trace there
  q_t        [T, B]    (optional) q(s_t, a_t) of the action taken; default v_t[:T]

The return estimates q(s_t, a_t):

  G_t = r_t + discount_t * (v_{t+1} + c_{t+1} * (G_{t+1} - q_{t+1})),   c_T := 0.

Muesli's form takes v_t = sum_a pi(a|s_t) q(s_t, a) and q_t = q(s_t, a_t) from the target
network's one-step model; without q_t the state value stands in for both. Equivalently
G_t - q_t = sum_{s>=t} (prod_{i=t+1}^{s} discount_{i-1} c_i) delta_s with the TD error
delta_s = r_s + discount_s v_{s+1} - q_s. With pi == mu, lambda = 1 and no terminal this
is the n-step return sum_s gamma^(s-t) r_s + gamma^(T-t) v_T.

The state-value estimate consistent with it (what G_{t-1} bootstraps from) is

  V_t = v_t + c_t * (G_t - q_t).
"""

import torch


def _check(r_t, discount_t, v_t, c_t, q_t=None):
    if r_t.dim() != 2:
        raise ValueError(f"r_t must be [T, B], got shape {tuple(r_t.shape)}")
    T, B = r_t.shape
    for name, x, shape in (
        ("discount_t", discount_t, (T, B)),
        ("v_t", v_t, (T + 1, B)),
        ("c_t", c_t, (T, B)),
        ("q_t", v_t[:T] if q_t is None else q_t, (T, B)),
    ):
        if tuple(x.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} (from r_t [T, B]), got {tuple(x.shape)}"
            )


def retrace_loop(r_t, discount_t, v_t, c_t, q_t=None) -> torch.Tensor:
    """Readable reference: the backward recursion one step at a time. Returns G [T, B]."""
    _check(r_t, discount_t, v_t, c_t, q_t)
    T = r_t.shape[0]
    q_t = v_t[:T] if q_t is None else q_t
    g = torch.empty_like(r_t)
    next_g = v_t[T]
    for t in reversed(range(T)):
        correction = c_t[t + 1] * (next_g - q_t[t + 1]) if t + 1 < T else torch.zeros_like(next_g)
        g[t] = r_t[t] + discount_t[t] * (v_t[t + 1] + correction)
        next_g = g[t]
    return g


def retrace(r_t, discount_t, v_t, c_t, q_t=None) -> torch.Tensor:
    """Vectorised form (no loop over time): G - q = M @ delta with an upper-triangular
    weight matrix M[t, s] = prod_{i=t+1}^{s} discount_{i-1} c_i. O(T^2 B), fine for T <= ~100.
    Returns G [T, B]."""
    _check(r_t, discount_t, v_t, c_t, q_t)
    T = r_t.shape[0]
    q_t = v_t[:T] if q_t is None else q_t
    delta = r_t + discount_t * v_t[1:] - q_t  # [T, B]
    # x_i = discount_{i-1} c_i for i >= 1; x_0 is unused.
    x = torch.cat([torch.ones_like(c_t[:1]), discount_t[:-1] * c_t[1:]])  # [T, B]
    idx = torch.arange(T, device=r_t.device)
    upper = idx[None, :] > idx[:, None]  # s > t
    # factors[t, s] = x_s where s > t, 1 on and below the diagonal; cumprod over s.
    factors = torch.where(upper[..., None], x[None, :, :], torch.ones_like(x)[None])
    weights = torch.cumprod(factors, dim=1) * (idx[None, :] >= idx[:, None])[..., None]
    return q_t + torch.einsum("tsb,sb->tb", weights, delta)


def retrace_state_values(v_t, c_t, returns, q_t=None) -> torch.Tensor:
    """V_t = v_t + c_t (G_t - q_t) [T, B]: the state-value target consistent with the Retrace
    returns G (the bracket G_{t-1} bootstraps from). c_t = 0 (a padded step) gives v_t."""
    T = returns.shape[0]
    q_t = v_t[:T] if q_t is None else q_t
    return v_t[:T] + c_t * (returns - q_t)


def discounted_returns(r_t, discount_t, bootstrap_v) -> torch.Tensor:
    """Monte-Carlo / n-step returns G_t = r_t + discount_t G_{t+1}, G_T = bootstrap_v [B].

    This is Retrace with every trace c = 1 (no off-policy correction), as the seed used."""
    v_t = torch.cat([torch.zeros_like(r_t), bootstrap_v[None]])
    return retrace(r_t, discount_t, v_t, torch.ones_like(r_t))
