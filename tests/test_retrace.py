"""Retrace value targets (common/retrace.py) against loops and hand-computed numbers."""

import itertools

import pytest
import torch

from common.retrace import discounted_returns, retrace, retrace_loop, retrace_state_values

F64 = torch.float64


def _random_inputs(T, B, gamma, lam, seed, p_terminal=0.2, p_zero_trace=0.2):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(T, B, generator=g, dtype=F64)
    v = torch.randn(T + 1, B, generator=g, dtype=F64) * 3
    terminal = torch.rand(T, B, generator=g, dtype=F64) < p_terminal
    discount = gamma * (~terminal).to(F64)
    ratio = torch.rand(T, B, generator=g, dtype=F64) * 2  # pi/mu in [0, 2)
    c = lam * ratio.clamp(max=1.0)
    c = torch.where(torch.rand(T, B, generator=g, dtype=F64) < p_zero_trace, torch.zeros_like(c), c)
    return r, discount, v, c


def _python_retrace(r, discount, v, c):
    """Forward-view reference: G_t = v_t + sum_{s>=t} (prod_{i=t+1}^{s} discount_{i-1} c_i) delta_s,
    with plain python floats."""
    T, B = len(r), len(r[0])
    out = [[0.0] * B for _ in range(T)]
    for b in range(B):
        for t in range(T):
            total, weight = v[t][b], 1.0
            for s in range(t, T):
                if s > t:
                    weight *= discount[s - 1][b] * c[s][b]
                delta = r[s][b] + discount[s][b] * v[s + 1][b] - v[s][b]
                total += weight * delta
            out[t][b] = total
    return out


@pytest.mark.parametrize(
    "T,B,gamma,lam",
    [
        (1, 3, 0.9, 1.0),
        (2, 1, 0.0, 0.5),
        (5, 4, 0.99, 0.95),
        (17, 3, 0.9, 1.0),
        (30, 8, 0.997, 0.8),
        (64, 2, 1.0, 0.95),
    ],
)
def test_vectorised_matches_loop(T, B, gamma, lam):
    for seed in range(3):
        r, d, v, c = _random_inputs(T, B, gamma, lam, seed=seed * 100 + T)
        torch.testing.assert_close(
            retrace(r, d, v, c), retrace_loop(r, d, v, c), rtol=1e-12, atol=1e-10
        )


def test_loop_matches_forward_view_python():
    r, d, v, c = _random_inputs(9, 3, 0.95, 0.9, seed=7, p_terminal=0.25, p_zero_trace=0.25)
    want = torch.tensor(_python_retrace(r.tolist(), d.tolist(), v.tolist(), c.tolist()), dtype=F64)
    torch.testing.assert_close(retrace_loop(r, d, v, c), want, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(retrace(r, d, v, c), want, rtol=1e-12, atol=1e-10)


def test_float32_batched_matches_loop():
    r, d, v, c = (x.float() for x in _random_inputs(30, 16, 0.99, 0.95, seed=3))
    out = retrace(r, d, v, c)
    assert out.dtype == torch.float32 and out.shape == (30, 16)
    torch.testing.assert_close(out, retrace_loop(r, d, v, c), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T,gamma", [(1, 0.9), (4, 0.9), (12, 0.99), (25, 0.5)])
def test_on_policy_lambda_one_is_n_step_return(T, gamma):
    B = 3
    g = torch.Generator().manual_seed(T)
    r = torch.randn(T, B, generator=g, dtype=F64)
    v = torch.randn(T + 1, B, generator=g, dtype=F64)
    d = torch.full((T, B), gamma, dtype=F64)
    # pi == mu -> ratio 1, lambda = 1 -> every trace is 1 (c_0 is never used: make it odd).
    c = torch.ones(T, B, dtype=F64)
    c[0] = 0.123
    want = torch.empty(T, B, dtype=F64)
    for b in range(B):
        for t in range(T):
            total = 0.0
            for s in range(t, T):
                total += gamma ** (s - t) * r[s, b].item()
            total += gamma ** (T - t) * v[T, b].item()
            want[t, b] = total
    torch.testing.assert_close(retrace(r, d, v, c), want, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(retrace_loop(r, d, v, c), want, rtol=1e-12, atol=1e-10)


def test_hand_computed_three_steps():
    # gamma 0.9, r = 1, 2, 3, v(s_0..s_3) = 0.5, 1.0, 1.5, 2.0, traces c_1 = 0.5, c_2 = 0.8.
    #   G_2 = 3 + 0.9 * 2.0                            = 4.8
    #   G_1 = 2 + 0.9 * (1.5 + 0.8 * (4.8 - 1.5))      = 2 + 0.9 * 4.14  = 5.726
    #   G_0 = 1 + 0.9 * (1.0 + 0.5 * (5.726 - 1.0))    = 1 + 0.9 * 3.363 = 4.0267
    r = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    v = torch.tensor([[0.5], [1.0], [1.5], [2.0]], dtype=F64)
    c = torch.tensor([[0.7], [0.5], [0.8]], dtype=F64)  # c_0 is unused
    d = torch.full((3, 1), 0.9, dtype=F64)
    want = torch.tensor([[4.0267], [5.726], [4.8]], dtype=F64)
    torch.testing.assert_close(retrace(r, d, v, c), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(retrace_loop(r, d, v, c), want, rtol=0, atol=1e-12)
    # Same with a true terminal at step 1 (discount_1 = 0):
    #   G_2 = 4.8, G_1 = 2, G_0 = 1 + 0.9 * (1.0 + 0.5 * (2 - 1.0)) = 2.35
    d_term = torch.tensor([[0.9], [0.0], [0.9]], dtype=F64)
    want_term = torch.tensor([[2.35], [2.0], [4.8]], dtype=F64)
    torch.testing.assert_close(retrace(r, d_term, v, c), want_term, rtol=0, atol=1e-12)
    torch.testing.assert_close(retrace_loop(r, d_term, v, c), want_term, rtol=0, atol=1e-12)


def test_terminal_cuts_truncation_bootstraps():
    """Episode ends at step L-1 = 2 of T = 6; steps 3.. are padding (trace 0)."""
    T, L, gamma = 6, 3, 0.9
    r = torch.tensor([1.0, 2.0, 3.0, 7.0, 7.0, 7.0], dtype=F64)[:, None]
    # v_3 = value of final obs
    v = torch.tensor([0.5, 1.0, 1.5, 10.0, -4.0, 6.0, 8.0], dtype=F64)[:, None]
    c = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)[:, None]
    d_trunc = torch.full((T, 1), gamma, dtype=F64)
    d_term = d_trunc.clone()
    d_term[L - 1] = 0.0
    for fn in (retrace, retrace_loop):
        trunc = fn(r, d_trunc, v, c)[:L, 0]
        term = fn(r, d_term, v, c)[:L, 0]
        # terminal: plain discounted sum of the rewards, the final observation's value is ignored
        torch.testing.assert_close(
            term, torch.tensor([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0], dtype=F64)
        )
        # truncation: bootstraps from v_3 = 10
        torch.testing.assert_close(
            trunc,
            torch.tensor(
                [1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 10, 2 + 0.9 * 3 + 0.81 * 10, 3 + 0.9 * 10],
                dtype=F64,
            ),
        )
        # after the terminal, v_3.. and padded rewards do not matter at all
        v2, r2 = v.clone(), r.clone()
        v2[L:] = torch.tensor([[123.0], [-55.0], [1e3], [4.0]], dtype=F64)
        r2[L:] = -99.0
        torch.testing.assert_close(
            fn(r2, d_term, v2, c)[:L], fn(r, d_term, v, c)[:L], rtol=0, atol=0
        )
        # with a truncation only v_L (the final observation) matters, not v_{L+1}.. or later rewards
        v3 = v.clone()
        v3[L + 1 :] = 77.0
        torch.testing.assert_close(fn(r2, d_trunc, v3, c)[:L], trunc[:, None], rtol=0, atol=1e-12)


def test_zero_trace_cuts_to_one_step_bootstrap():
    r, d, v, _ = _random_inputs(8, 2, 0.95, 1.0, seed=5, p_terminal=0.0)
    c = torch.zeros_like(r)
    torch.testing.assert_close(retrace(r, d, v, c), r + d * v[1:], rtol=1e-12, atol=1e-12)


def test_discounted_returns_equals_monte_carlo():
    T, B = 11, 4
    g = torch.Generator().manual_seed(11)
    r = torch.randn(T, B, generator=g, dtype=F64)
    terminal = torch.rand(T, B, generator=g) < 0.2
    d = 0.97 * (~terminal).to(F64)
    boot = torch.randn(B, generator=g, dtype=F64)
    want = torch.empty(T, B, dtype=F64)
    for b in range(B):
        running = boot[b].item()
        for t in reversed(range(T)):
            running = r[t, b].item() + d[t, b].item() * running
            want[t, b] = running
    torch.testing.assert_close(discounted_returns(r, d, boot), want, rtol=1e-12, atol=1e-10)


def test_wrong_shapes_raise():
    T, B = 4, 3
    r, d, v, c = torch.zeros(T, B), torch.zeros(T, B), torch.zeros(T + 1, B), torch.zeros(T, B)
    shape = r" must have shape \({}, 3\) \(from r_t \[T, B\]\), got \({}, {}\)$"
    bad = [
        ((torch.zeros(T), d, v, c), r"^r_t must be \[T, B\], got shape \(4,\)$"),
        ((torch.zeros(T, B, 1), d, v, c), r"^r_t must be \[T, B\], got shape \(4, 3, 1\)$"),
        ((r, torch.zeros(T, B + 1), v, c), "^discount_t" + shape.format(4, 4, 4)),
        ((r, d, torch.zeros(T, B), c), "^v_t" + shape.format(5, 4, 3)),
        ((r, d, torch.zeros(T + 1, B + 1), c), "^v_t" + shape.format(5, 5, 4)),
        ((r, d, v, torch.zeros(T + 1, B)), "^c_t" + shape.format(4, 5, 3)),
    ]
    for fn, (args, message) in itertools.product((retrace, retrace_loop), bad):
        with pytest.raises(ValueError, match=message):
            fn(*args)


def test_q_of_the_taken_action_by_hand():
    """G_1 = r_1 + d v_2 = 2 + 0.9 * 4 = 5.6; G_0 = r_0 + d (v_1 + c_1 (G_1 - q_1)) = 1 + 0.9 (3 + 0.5 (5.6 - 6))
    = 3.52 (with v_1 = 3 in place of q_1 = 6: 1 + 0.9 (3 + 0.5 * 2.6) = 4.87). V_t = v_t + c_t (G_t - q_t):
    V_0 = 10 + 0.25 (3.52 - 5) = 9.63, V_1 = 3 + 0.5 (5.6 - 6) = 2.8."""
    r = torch.tensor([[1.0], [2.0]], dtype=F64)
    d = torch.full((2, 1), 0.9, dtype=F64)
    v = torch.tensor([[10.0], [3.0], [4.0]], dtype=F64)
    c = torch.tensor([[0.25], [0.5]], dtype=F64)
    q = torch.tensor([[5.0], [6.0]], dtype=F64)
    for fn in (retrace, retrace_loop):
        torch.testing.assert_close(
            fn(r, d, v, c, q), torch.tensor([[3.52], [5.6]], dtype=F64), rtol=0, atol=1e-12
        )
    G = retrace(r, d, v, c, q)
    torch.testing.assert_close(
        retrace_state_values(v, c, G, q),
        torch.tensor([[9.63], [2.8]], dtype=F64),
        rtol=0,
        atol=1e-12,
    )
    # without q the state value stands in for q: V_t = v_t + c_t (G_t - v_t)
    G_v = retrace(r, d, v, c)
    torch.testing.assert_close(G_v, torch.tensor([[4.87], [5.6]], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        retrace_state_values(v, c, G_v), v[:2] + c * (G_v - v[:2]), rtol=0, atol=0
    )


@pytest.mark.parametrize("T,B", [(1, 3), (5, 4), (30, 8)])
def test_vectorised_matches_loop_with_q(T, B):
    for seed in range(3):
        r, d, v, c = _random_inputs(T, B, 0.95, 0.9, seed=seed * 7 + T)
        q = torch.randn(T, B, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3
        torch.testing.assert_close(
            retrace(r, d, v, c, q), retrace_loop(r, d, v, c, q), rtol=1e-12, atol=1e-10
        )
