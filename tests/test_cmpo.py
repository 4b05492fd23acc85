"""CMPO policy, regularisers and the advantage normaliser (common/cmpo.py)."""

import math

import pytest
import torch

from common import cmpo

F64 = torch.float64


def _random_prior_and_adv(shape, seed, adv_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    prior_logits = torch.randn(*shape, generator=g, dtype=F64) * 2
    adv = torch.randn(*shape, generator=g, dtype=F64) * adv_scale
    return torch.log_softmax(prior_logits, -1), adv


def _brute_force_cmpo(prior_row, adv_row, c):
    w = [p * math.exp(min(max(a, -c), c)) for p, a in zip(prior_row, adv_row)]
    z = sum(w)
    return [x / z for x in w]


def test_cmpo_sums_to_one_and_matches_brute_force():
    prior_lp, adv = _random_prior_and_adv((5, 3, 6), seed=0)
    for c in (0.3, 1.0, 2.5):
        pi = cmpo.cmpo_log_probs(prior_lp, adv, clip=c).exp()
        assert pi.shape == (5, 3, 6)
        torch.testing.assert_close(pi.sum(-1), torch.ones(5, 3, dtype=F64), rtol=0, atol=1e-12)
        prior = prior_lp.exp().reshape(-1, 6).tolist()
        flat_adv = adv.reshape(-1, 6).tolist()
        want = torch.tensor(
            [_brute_force_cmpo(p, a, c) for p, a in zip(prior, flat_adv)], dtype=F64
        )
        torch.testing.assert_close(pi.reshape(-1, 6), want, rtol=1e-10, atol=1e-12)


def test_cmpo_hand_example():
    # prior (0.5, 0.25, 0.25), adv (2, 0, -0.5), c = 1 -> weights 0.5e, 0.25, 0.25e^-0.5
    prior = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    pi = cmpo.cmpo_log_probs(prior.log(), torch.tensor([2.0, 0.0, -0.5], dtype=F64), clip=1.0).exp()
    w = torch.tensor([0.5 * math.e, 0.25, 0.25 * math.exp(-0.5)], dtype=F64)
    torch.testing.assert_close(pi, w / w.sum(), rtol=0, atol=1e-14)


def test_cmpo_equals_prior_for_zero_advantage():
    prior_lp, _ = _random_prior_and_adv((7, 5), seed=1)
    out = cmpo.cmpo_log_probs(prior_lp, torch.zeros_like(prior_lp), clip=1.0)
    torch.testing.assert_close(out.exp(), prior_lp.exp(), rtol=0, atol=1e-14)
    # a constant advantage shift is also a no-op (as long as it stays inside the clip)
    out = cmpo.cmpo_log_probs(prior_lp, torch.full_like(prior_lp, 0.7), clip=1.0)
    torch.testing.assert_close(out.exp(), prior_lp.exp(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("c", [0.1, 0.5, 1.0, 2.0, 4.0])
def test_total_variation_bounded_by_tanh_half_c(c):
    bound = math.tanh(c / 2)
    for seed, (n, A) in enumerate([(2000, 2), (2000, 4), (500, 18)]):
        prior_lp, adv = _random_prior_and_adv((n, A), seed=seed + 10, adv_scale=5.0)
        pi = cmpo.cmpo_log_probs(prior_lp, adv, clip=c).exp()
        tv = 0.5 * (pi - prior_lp.exp()).abs().sum(-1)
        assert float(tv.max()) <= bound + 1e-12
    # The bound is tight: prior mass p = 1 / (1 + e^c) on actions with adv = +c, rest at -c.
    p = 1.0 / (1.0 + math.exp(c))
    prior = torch.tensor([p, 1.0 - p], dtype=F64)
    pi = cmpo.cmpo_log_probs(prior.log(), torch.tensor([10.0, -10.0], dtype=F64), clip=c).exp()
    tv = 0.5 * (pi - prior).abs().sum()
    assert float(tv) == pytest.approx(bound, abs=1e-12)


def test_clipping_at_c():
    prior_lp, adv = _random_prior_and_adv((50, 4), seed=3, adv_scale=4.0)
    c = 1.0
    clipped = adv.clamp(-c, c)
    assert (adv.abs() > c).any() and (adv.abs() < c).any()
    torch.testing.assert_close(
        cmpo.cmpo_log_probs(prior_lp, adv, c),
        cmpo.cmpo_log_probs(prior_lp, clipped, c),
        rtol=0,
        atol=0,
    )
    beyond = torch.sign(adv) * (
        c + 100 * torch.rand(adv.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    )
    torch.testing.assert_close(
        cmpo.cmpo_log_probs(prior_lp, beyond, c),
        cmpo.cmpo_log_probs(prior_lp, torch.sign(adv) * c, c),
        rtol=0,
        atol=1e-14,
    )
    # ... and a different clip gives a different answer (the clip is really applied at c)
    assert not torch.allclose(
        cmpo.cmpo_log_probs(prior_lp, adv, 2.0), cmpo.cmpo_log_probs(prior_lp, clipped, 2.0)
    )


def test_cmpo_shape_mismatch_raises():
    with pytest.raises(ValueError):
        cmpo.cmpo_log_probs(torch.zeros(3, 4), torch.zeros(3, 5))


def test_normalizer_matches_bias_corrected_ema():
    beta, eps = 0.9, 1e-12
    g = torch.Generator().manual_seed(5)
    state = cmpo.init_normalizer()
    m, n = 0.0, 0
    for step in range(12):
        adv = torch.randn(6, 4, 3, generator=g, dtype=torch.float32) * (1 + step)
        mask = (torch.rand(6, 4, generator=g) < 0.7).float()
        mask[0, 0] = 1.0
        state = cmpo.update_normalizer(state, adv, beta, mask)
        # brute force: mean of adv^2 over the masked rows' entries
        vals = [
            adv[i, j, a].item() ** 2
            for i in range(6)
            for j in range(4)
            for a in range(3)
            if mask[i, j] > 0
        ]
        m = beta * m + (1 - beta) * sum(vals) / len(vals)
        n += 1
        assert state.second_moment.item() == pytest.approx(m, rel=1e-5)
        assert state.count.item() == n
        var_hat = m / (1 - beta**n)
        out = cmpo.normalize(adv, state, beta, eps)
        torch.testing.assert_close(out, adv / math.sqrt(var_hat + eps), rtol=1e-5, atol=1e-6)
    # After the first update the bias-corrected variance is exactly that batch's mean square.
    adv = torch.tensor([[3.0, -4.0]])
    s1 = cmpo.update_normalizer(cmpo.init_normalizer(), adv, 0.99)
    torch.testing.assert_close(cmpo.normalize(adv, s1, 0.99, 0.0), adv / math.sqrt(12.5))


def test_normalizer_mask_ignores_masked_entries():
    g = torch.Generator().manual_seed(6)
    adv = torch.randn(5, 3, 4, generator=g)
    mask = torch.tensor(
        [[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=torch.float32
    )
    s_a = cmpo.update_normalizer(cmpo.init_normalizer(), adv, 0.99, mask)
    adv_b = adv.clone()
    adv_b[mask == 0] = 1e3
    s_b = cmpo.update_normalizer(cmpo.init_normalizer(), adv_b, 0.99, mask)
    torch.testing.assert_close(s_a.second_moment, s_b.second_moment)
    s_none = cmpo.update_normalizer(cmpo.init_normalizer(), adv_b, 0.99)
    assert s_none.second_moment > 10 * s_a.second_moment
    # per-entry advantages [T, B] with a [T, B] mask
    s_c = cmpo.update_normalizer(cmpo.init_normalizer(), adv[..., 0], 0.5, mask)
    want = 0.5 * (adv[..., 0][mask > 0] ** 2).mean()
    torch.testing.assert_close(s_c.second_moment, want)
    # the update does not carry gradient
    x = torch.randn(3, 2, requires_grad=True)
    assert not cmpo.update_normalizer(cmpo.init_normalizer(), x, 0.9).second_moment.requires_grad


def test_exact_kl_value_and_gradient():
    prior_lp, adv = _random_prior_and_adv((4, 5), seed=7)
    target = cmpo.cmpo_log_probs(prior_lp, adv)
    logits = torch.randn(
        4, 5, dtype=F64, generator=torch.Generator().manual_seed(8), requires_grad=True
    )
    log_pi = torch.log_softmax(logits, -1)
    kl = cmpo.exact_kl(target, log_pi)
    p, q = target.exp(), log_pi.exp()
    torch.testing.assert_close(kl, (p * (p.log() - q.log())).sum(-1))
    assert (kl > 0).all()
    kl.sum().backward()
    # d/dlogits KL(p || softmax(logits)) = softmax(logits) - p
    torch.testing.assert_close(logits.grad, q.detach() - p)
    assert torch.allclose(cmpo.exact_kl(target, target), torch.zeros(4, dtype=F64))


def test_exact_kl_zero_target_probability():
    # 0 log 0 = 0: p = (1/2, 1/2, 0), pi = (1/4, 1/4, 1/2) -> KL = log 2, d/dlogits = pi - p
    target = torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=F64))  # log 0 = -inf
    logits = torch.log(torch.tensor([0.25, 0.25, 0.5], dtype=F64)).requires_grad_(True)
    kl = cmpo.exact_kl(target, torch.log_softmax(logits, -1))
    assert kl.item() == pytest.approx(math.log(2.0), abs=1e-15)
    kl.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor([-0.25, -0.25, 0.5], dtype=F64), rtol=0, atol=1e-15
    )
    # pi(a) = 0 where p(a) = 0 as well: the term is 0, its gradient too
    log_pi = torch.log(torch.tensor([0.25, 0.75, 0.0], dtype=F64)).requires_grad_(True)
    kl = cmpo.exact_kl(target, log_pi)
    assert kl.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75), abs=1e-15)
    kl.backward()
    torch.testing.assert_close(
        log_pi.grad, torch.tensor([-0.5, -0.5, 0.0], dtype=F64), rtol=0, atol=0
    )


def test_sampled_regularizer_matches_exact_in_expectation():
    A, N, draws, c = 4, 16, 20000, 1.0
    g = torch.Generator().manual_seed(9)
    prior = torch.softmax(torch.randn(A, generator=g, dtype=F64), -1)
    adv = torch.tensor([1.7, -0.4, 0.3, -2.0], dtype=F64)
    logits = torch.randn(A, generator=g, dtype=F64)
    pi_cmpo = cmpo.cmpo_log_probs(prior.log(), adv, c).exp()

    # exact cross-entropy -sum_a pi_cmpo(a) log pi(a) and its gradient softmax(logits) - pi_cmpo
    exact_logits = logits.clone().requires_grad_(True)
    exact = -(pi_cmpo * torch.log_softmax(exact_logits, -1)).sum()
    exact.backward()

    # [draws, N]
    samples = torch.multinomial(prior.expand(draws, A), N, replacement=True, generator=g)
    sampled_logits = logits.clone().requires_grad_(True)
    log_pi = torch.log_softmax(sampled_logits, -1)[samples]
    adv_s = adv.clamp(-c, c)[samples]
    loss = cmpo.sampled_cmpo_regularizer(log_pi, adv_s)
    assert loss.shape == (draws,)
    loss.mean().backward()

    g_exact, g_sampled = exact_logits.grad, sampled_logits.grad
    cos = torch.nn.functional.cosine_similarity(g_exact, g_sampled, dim=0)
    assert cos > 0.98, (g_exact, g_sampled)
    assert (g_sampled - g_exact).norm() < 0.1 * g_exact.norm()
    assert float(loss.mean().detach()) == pytest.approx(float(exact.detach()), rel=0.05)


def test_sampled_regularizer_hand_example():
    # N = 2, adv (a1, a2): z_1 = (1 + e^a2) / 2, z_2 = (1 + e^a1) / 2
    a = torch.tensor([0.5, -1.0], dtype=F64)
    lp = torch.tensor([-0.3, -2.0], dtype=F64)
    w1 = math.exp(0.5) / ((1 + math.exp(-1.0)) / 2)
    w2 = math.exp(-1.0) / ((1 + math.exp(0.5)) / 2)
    want = -(w1 * -0.3 + w2 * -2.0) / 2
    assert cmpo.sampled_cmpo_regularizer(lp, a).item() == pytest.approx(want, abs=1e-14)
    # advantages carry no gradient
    adv = a.clone().requires_grad_(True)
    lp2 = lp.clone().requires_grad_(True)
    cmpo.sampled_cmpo_regularizer(lp2, adv).backward()
    assert adv.grad is None and lp2.grad is not None


def test_mix_prior():
    g = torch.Generator().manual_seed(10)
    target = torch.softmax(torch.randn(6, 5, generator=g, dtype=F64), -1)
    mu = torch.softmax(torch.randn(6, 5, generator=g, dtype=F64), -1)
    mixed = cmpo.mix_prior(target, mu, 0.03, 0.003)
    torch.testing.assert_close(mixed.sum(-1), torch.ones(6, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(mixed, 0.967 * target + 0.03 * mu + 0.003 / 5)
    assert (mixed >= 0.003 / 5 - 1e-15).all()
    torch.testing.assert_close(cmpo.mix_prior(target), target, rtol=0, atol=0)
    uni = cmpo.mix_prior(target, None, 0.5, 0.2)  # no behaviour: its weight is ignored
    torch.testing.assert_close(uni, 0.8 * target + 0.2 / 5)
    torch.testing.assert_close(uni.sum(-1), torch.ones(6, dtype=F64))
