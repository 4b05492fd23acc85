"""Value transform h / h^-1 and two-hot encoding (common/value_transforms.py)."""

import math
from decimal import Decimal, getcontext

import pytest
import torch

from common import value_transforms as vt


def _h_reference(x: float, eps: float = 1e-3) -> float:
    return math.copysign(math.sqrt(abs(x) + 1.0) - 1.0, x) + eps * x


def _wide_range(dtype):
    mags = torch.logspace(-6, 5, 400, dtype=torch.float64)
    x = torch.cat(
        [
            torch.linspace(-1e5, 1e5, 20001, dtype=torch.float64),
            mags,
            -mags,
            torch.tensor([0.0, 1.0, -1.0, 0.5, -0.5, 499.0, 500.0], dtype=torch.float64),
        ]
    )
    return x.to(dtype)


def test_h_matches_scalar_formula():
    xs = [-1e5, -500.0, -3.7, -1.0, -1e-3, 0.0, 1e-3, 0.25, 1.0, 2.0, 42.0, 500.0, 1e5]
    got = vt.h(torch.tensor(xs, dtype=torch.float64))
    want = torch.tensor([_h_reference(x) for x in xs], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # A few values written out: h(3) = 2 - 1 + 0.003, h(-8) = -(3 - 1) - 0.008.
    assert vt.h(torch.tensor(3.0, dtype=torch.float64)).item() == pytest.approx(1.003, abs=1e-12)
    assert vt.h(torch.tensor(-8.0, dtype=torch.float64)).item() == pytest.approx(-2.008, abs=1e-12)


def test_h_is_odd_and_strictly_increasing():
    x = _wide_range(torch.float64).sort().values.unique()
    y = vt.h(x)
    assert torch.all(y[1:] > y[:-1])
    torch.testing.assert_close(vt.h(-x), -y, rtol=0, atol=0)


def test_h_inv_inverts_h_float64():
    x = _wide_range(torch.float64)
    back = vt.h_inv(vt.h(x))
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, x, rtol=1e-11, atol=1e-9)
    # and the other direction, on the transformed range
    y = torch.linspace(-420.0, 420.0, 8401, dtype=torch.float64)
    torch.testing.assert_close(vt.h(vt.h_inv(y)), y, rtol=1e-11, atol=1e-9)


def test_h_inv_inverts_h_float32():
    x = _wide_range(torch.float32)
    back = vt.h_inv(vt.h(x))
    assert back.dtype == torch.float32
    # both directions are computed without cancelling subtractions: a few float32 ulps
    torch.testing.assert_close(back, x, rtol=1e-6, atol=0)


def _decimal_h(x: float, eps: str = "0.001") -> float:
    """h from its textbook formula, in 40-digit decimal arithmetic."""
    getcontext().prec = 40
    d, e = Decimal(x), Decimal(eps)
    sign = 1 if d >= 0 else -1
    return float(sign * ((abs(d) + 1).sqrt() - 1) + e * d)


def _decimal_h_inv(y: float, eps: str = "0.001") -> float:
    """h^-1 from its textbook formula, in 40-digit decimal arithmetic."""
    getcontext().prec = 40
    d, e = Decimal(y), Decimal(eps)
    sign = 1 if d >= 0 else -1
    inner = ((1 + 4 * e * (abs(d) + 1 + e)).sqrt() - 1) / (2 * e)
    return float(sign * (inner * inner - 1))


def _float32_grid(lo_exp, hi_exp, hi):
    mags = torch.logspace(lo_exp, hi_exp, 300, dtype=torch.float64)
    return torch.cat(
        [
            torch.linspace(-hi, hi, 801, dtype=torch.float64),
            mags,
            -mags,
            torch.tensor([0.34, -0.34, 0.0]),
        ]
    ).float()


def test_h_and_h_inv_float32_match_high_precision_reference():
    # The subtraction form sqrt(1 + 4 eps (|y| + 1 + eps)) - 1 lost 2.5e-5 (3e-5 relative) at y = 0.34
    # and all relative precision for |y| < 1e-6; the cancellation-free forms stay within ~4 ulps.
    y = _float32_grid(-12, 2.6, 420.0)
    want = torch.tensor([_decimal_h_inv(v) for v in y.double().tolist()], dtype=torch.float64)
    got = vt.h_inv(y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    x = _float32_grid(-12, 5, 1e5)
    want = torch.tensor([_decimal_h(v) for v in x.double().tolist()], dtype=torch.float64)
    torch.testing.assert_close(vt.h(x).double(), want, rtol=1e-6, atol=0)
    # float64 agrees with the reference to ~1e-15 relative
    torch.testing.assert_close(
        vt.h_inv(y.double()),
        torch.tensor([_decimal_h_inv(v) for v in y.double().tolist()], dtype=torch.float64),
        rtol=1e-14,
        atol=0,
    )


def test_two_hot_encode_decode_exact_and_valid_distribution():
    s_max = 10
    g = torch.Generator().manual_seed(0)
    y = torch.cat(
        [
            (torch.rand(5000, generator=g, dtype=torch.float64) * 2 - 1) * s_max,
            torch.arange(-s_max, s_max + 1, dtype=torch.float64),  # exactly on bins
            torch.tensor([-s_max + 1e-9, s_max - 1e-9, 0.5, -0.5], dtype=torch.float64),
        ]
    )
    p = vt.two_hot(y, s_max)
    assert p.shape == (y.shape[0], 2 * s_max + 1)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(-1), torch.ones_like(y), rtol=0, atol=1e-12)
    assert int((p > 0).sum(-1).max()) <= 2
    # non-zeros are on neighbouring bins floor(y), floor(y) + 1
    nz_lo = (p > 0).float().argmax(-1)
    assert torch.all(nz_lo == (torch.floor(y) + s_max).long())
    torch.testing.assert_close(vt.from_two_hot(p, s_max), y, rtol=0, atol=1e-12)


def test_two_hot_hand_example():
    p = vt.two_hot(torch.tensor([1.25, -2.0], dtype=torch.float64), 3)  # support -3..3
    want = torch.zeros(2, 7, dtype=torch.float64)
    want[0, 4], want[0, 5] = 0.75, 0.25  # bins 1 and 2
    want[1, 1] = 1.0  # bin -2
    torch.testing.assert_close(p, want, rtol=0, atol=1e-15)


def test_two_hot_batched_float32_decode():
    s_max = 300
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(7, 11, generator=g) * 2 - 1) * s_max
    p = vt.two_hot(y, s_max)
    assert p.shape == (7, 11, 601)
    torch.testing.assert_close(vt.from_two_hot(p, s_max), y, rtol=1e-6, atol=1e-4)


def test_two_hot_clips_beyond_s_max():
    s_max = 5
    y = torch.tensor([5.0, 5.5, 7.0, 1e6, -5.0, -5.01, -1e6], dtype=torch.float64)
    p = vt.two_hot(y, s_max)
    top = torch.zeros(11, dtype=torch.float64)
    top[-1] = 1.0
    bottom = torch.zeros(11, dtype=torch.float64)
    bottom[0] = 1.0
    for i in range(4):
        torch.testing.assert_close(p[i], top, rtol=0, atol=0)
    for i in range(4, 7):
        torch.testing.assert_close(p[i], bottom, rtol=0, atol=0)
    torch.testing.assert_close(
        vt.from_two_hot(p, s_max),
        torch.tensor([5.0, 5.0, 5.0, 5.0, -5.0, -5.0, -5.0], dtype=torch.float64),
    )


def test_from_two_hot_rejects_wrong_bin_count():
    with pytest.raises(ValueError, match=r"^expected 11 bins for s_max=5, got shape \(3, 10\)$"):
        vt.from_two_hot(torch.ones(3, 10) / 10, 5)


def test_categorical_round_trip_through_logits():
    s_max = 30  # h(x) in [-30, 30] covers |x| up to ~ 1000
    g = torch.Generator().manual_seed(2)
    x = torch.cat(
        [
            (torch.rand(2000, generator=g, dtype=torch.float64) * 2 - 1) * 900.0,
            torch.tensor([0.0, 1.0, -1.0, 500.0, -0.3], dtype=torch.float64),
        ]
    )
    assert float(vt.h(x).abs().max()) < s_max
    cat = vt.scalar_to_categorical(x, s_max)
    torch.testing.assert_close(vt.from_two_hot(cat, s_max), vt.h(x), rtol=0, atol=1e-11)
    back = vt.categorical_to_scalar(torch.log(cat), s_max)  # log 0 = -inf -> probability 0
    assert torch.isfinite(back).all()
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-8)
    # logits are shift invariant
    torch.testing.assert_close(
        vt.categorical_to_scalar(torch.log(cat) + 3.0, s_max), x, rtol=1e-9, atol=1e-8
    )


def test_categorical_round_trip_clips_out_of_range():
    s_max = 5
    x = torch.tensor([1e4, -1e4], dtype=torch.float64)  # |h(x)| > 5
    back = vt.categorical_to_scalar(torch.log(vt.scalar_to_categorical(x, s_max)), s_max)
    # h^-1(5) by hand: sqrt(1 + 0.004 * 6.001) = sqrt(1.024004); ((that - 1) / 0.002)^2 - 1
    limit = ((math.sqrt(1.024004) - 1.0) / 0.002) ** 2 - 1.0  # 34.5862...
    assert limit == pytest.approx(_decimal_h_inv(5.0), rel=1e-9)
    torch.testing.assert_close(
        back, torch.tensor([limit, -limit], dtype=torch.float64), rtol=1e-9, atol=0
    )


@pytest.mark.parametrize("s_max", [1, 5, 30])
def test_two_hot_cross_entropy_equals_the_built_distribution_form(s_max):
    """Across the whole support, its ends, beyond them and on every bin edge: the two-bin read
    equals -sum(two_hot(y) * log_softmax(logits)), and so do the gradients."""
    g = torch.Generator().manual_seed(s_max)
    y = torch.cat(
        [
            torch.linspace(-s_max - 2, s_max + 2, 401, dtype=torch.float64),
            torch.arange(-s_max, s_max + 1, dtype=torch.float64),
            torch.tensor([s_max - 0.5, -s_max + 0.5, s_max - 1e-9], dtype=torch.float64),
        ]
    )
    logits = torch.randn(
        y.shape[0], 2 * s_max + 1, generator=g, dtype=torch.float64, requires_grad=True
    )
    got = vt.two_hot_cross_entropy(logits, y, s_max)
    want = -(vt.two_hot(y, s_max) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_want,) = torch.autograd.grad(want.sum(), logits)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
    assert torch.isnan(
        vt.two_hot_cross_entropy(
            logits[:1], torch.tensor([float("nan")], dtype=torch.float64), s_max
        )
    ).all()
