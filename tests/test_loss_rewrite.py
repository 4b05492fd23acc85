"""The batched loss (common/losses.py) against the one-call-per-quantity form it replaced
(tests/reference_loss.py) on random batches: the same loss, metrics, normaliser state and
gradients within float rounding, for every loss option and start-state layout."""

import dataclasses

import pytest
import torch

import tests.reference_loss as reference
from common.config import Config
from common.losses import init_loss_state, muesli_loss_tensors
from tests.test_losses import A, D, make_nets

T, B = 7, 5


def random_batch(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, B)
    terminal = torch.zeros(T, B)
    # random episode ends: terminal or time limit, or none
    for b in range(B):
        end = int(torch.randint(1, T + 3, (), generator=g))
        if end < T:
            mask[end + 1 :, b] = 0.0
            terminal[end, b] = float(torch.rand((), generator=g) < 0.5)
    return dict(
        obs=torch.randn(T + 1, B, D, generator=g),
        action=torch.randint(0, A, (T, B), generator=g),
        reward=3 * torch.randn(T, B, generator=g),
        mask=mask,
        terminal=terminal,
        behaviour=torch.softmax(torch.randn(T, B, A, generator=g), -1),
    )


def nets(support_size, seed):
    """test_losses' online and (perturbed) target networks: obs dim 5, 3 actions."""
    return make_nets(support_size, seed)


def run(loss_fn, online, target, batch, p, state):
    online.zero_grad()
    # the sampled regulariser draws from the global generator
    torch.manual_seed(123)
    loss, metrics, new_state = loss_fn(online, target, batch, state, p)
    loss.backward()
    return loss.detach(), metrics, new_state, {n: q.grad for n, q in online.named_parameters()}


CASES = [
    # the run defaults (every state, 3 starts)
    dict(),
    dict(policy_terms_every_state=False),
    dict(max_starts=0),  # every start unrolled
    # start mask without a subsample
    dict(max_starts=0, with_start_mask=True),
    dict(policy_terms_every_state=False, with_start_mask=True, max_starts=0),
    dict(unroll_steps=0),
    dict(unroll_steps=1, max_starts=0),
    dict(unroll_steps=8),  # K beyond T
    dict(reg_samples=2),
    dict(retrace_q="model"),
    dict(value_head_target="value"),
    dict(pg_normalizer="shared"),
    dict(value_target="mc", hidden_grad_scale=1.0),
    dict(support_size=0),
    dict(support_size=0, policy_terms_every_state=False),
    dict(value_loss_weighting="per-start"),
    dict(value_loss_weighting="per-start", max_starts=0),
    dict(value_loss_weighting="per-start", policy_terms_every_state=False),
    dict(value_loss_weighting="per-start", unroll_steps=8),
]


@pytest.mark.parametrize(
    "case", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "defaults" for c in CASES]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_loss_equals_the_reference(case, seed):
    case = dict(case)
    support = case.pop("support_size", 5)
    with_start_mask = case.pop("with_start_mask", False)
    p = dataclasses.replace(Config().loss_params(), **{"max_starts": 3 * B, **case})
    online, target = nets(support, seed)
    batch = random_batch(seed)
    g = torch.Generator().manual_seed(seed + 7)
    if with_start_mask or p.max_starts:
        # as the learner's random_start_mask: at most max_starts ones, on valid steps
        scores = torch.where(
            batch["mask"] > 0, torch.rand(T, B, generator=g), torch.full((T, B), -1.0)
        )
        chosen = torch.zeros(T, B).scatter_(0, scores.topk(3, dim=0).indices, 1.0) * batch["mask"]
        batch["start_mask"] = chosen
    state = init_loss_state()
    state = state._replace(
        adv=state.adv._replace(second_moment=torch.tensor(0.7), count=torch.tensor(3.0))
    )
    new = run(muesli_loss_tensors, online, target, batch, p, state)
    old = run(reference.muesli_loss_tensors, online, target, batch, p, state)
    torch.testing.assert_close(new[0], old[0], rtol=1e-5, atol=1e-6)
    assert new[1].keys() == old[1].keys()
    for key in old[1]:
        torch.testing.assert_close(new[1][key], old[1][key], rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(new[2], old[2]):
        torch.testing.assert_close(tuple(a), tuple(b))
    for name in old[3]:
        if old[3][name] is None:  # g's parameters with K = 0
            assert new[3][name] is None, name
        else:
            torch.testing.assert_close(new[3][name], old[3][name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g is not None and g.abs().sum() > 0 for g in new[3].values())


def test_stats_off_leaves_the_loss_and_drops_only_stats():
    online, target = nets(5, 0)
    p = dataclasses.replace(Config().loss_params(), max_starts=0)
    batch = random_batch(0)
    with_stats = muesli_loss_tensors(online, target, batch, init_loss_state(), p)
    without = muesli_loss_tensors(online, target, batch, init_loss_state(), p, stats=False)
    assert torch.equal(with_stats[0], without[0])
    assert set(without[1]) == {k for k in with_stats[1] if k.startswith("loss/")}


@pytest.mark.parametrize("K", [0, 1, 4])
def test_batched_unroll_equals_the_reference(K):
    online, _ = nets(5, 3)
    obs, actions = torch.randn(9, D), torch.randint(0, A, (K, 9))
    new, old = online.unroll(obs, actions, 0.5), reference.unroll(online, obs, actions, 0.5)
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("limit_rows", [1, 7, 16])
def test_the_loss_in_cache_sized_pieces_equals_the_reference(monkeypatch, limit_rows):
    """The networks' rows split into pieces of at most `limit_rows` (width 16): same loss and gradients."""
    from common import losses

    monkeypatch.setattr(losses, "PIECE_BYTES", 4 * 16 * limit_rows)
    p = dataclasses.replace(Config().loss_params(), max_starts=3 * B)
    online, target = nets(5, 4)
    batch = random_batch(4)
    batch["start_mask"] = (
        torch.zeros(T, B).index_fill_(0, torch.tensor([0, 3, 5]), 1.0) * batch["mask"]
    )
    new = run(muesli_loss_tensors, online, target, batch, p, init_loss_state())
    old = run(reference.muesli_loss_tensors, online, target, batch, p, init_loss_state())
    torch.testing.assert_close(new[0], old[0], rtol=1e-5, atol=1e-6)
    for name in old[3]:
        torch.testing.assert_close(new[3][name], old[3][name], rtol=1e-4, atol=1e-6, msg=name)


def test_pieces_cover_every_row_once_in_order():
    from common.losses import _in_pieces

    calls = []

    def fn(x, y):
        calls.append(x.shape[0])
        return x * 2, y + 1

    parts = [
        (torch.arange(10.0), torch.arange(10)),
        (torch.arange(10.0, 13.0), torch.arange(10, 13)),
    ]
    a, b = _in_pieces(fn, 1, parts)  # width 1: PIECE_BYTES // 4 rows a call, one call here
    assert (
        calls == [13]
        and torch.equal(a, 2 * torch.arange(13.0))
        and torch.equal(b, torch.arange(1, 14))
    )
    calls.clear()
    # 4 rows a call: 10 -> 4+4+2, then 3 (2 + 3 > 4)
    a, b = _in_pieces(fn, (1 << 20) // 4 // 4, parts)
    assert (
        calls == [4, 4, 2, 3]
        and torch.equal(a, 2 * torch.arange(13.0))
        and torch.equal(b, torch.arange(1, 14))
    )


def test_per_start_value_weighting_is_the_pooled_mean_when_every_step_counts_alike():
    """With every state a start and no episode end, each k has T*B terms: the paper's per-start
    sum over k / (K + 1) is then exactly the pooled mean; with 3 starts of T it is not."""
    online, target = nets(5, 0)
    batch = random_batch(0)
    batch["mask"] = torch.ones(T, B)
    batch["terminal"] = torch.zeros(T, B)
    K = 2  # t + K within the sequence for t <= T - K - 1 only: keep starts where it is
    batch["start_mask"] = torch.zeros(T, B)
    batch["start_mask"][: T - K] = 1.0
    base = dict(max_starts=0, unroll_steps=K, policy_terms_every_state=False)
    values = {}
    for weighting in ("pooled", "per-start"):
        p = dataclasses.replace(Config().loss_params(), **base, value_loss_weighting=weighting)
        values[weighting] = muesli_loss_tensors(online, target, batch, init_loss_state(), p)[1]
    torch.testing.assert_close(values["pooled"]["loss/value"], values["per-start"]["loss/value"])
    every = {}
    for weighting in ("pooled", "per-start"):
        p = dataclasses.replace(
            Config().loss_params(), max_starts=3 * B, unroll_steps=K, value_loss_weighting=weighting
        )
        every[weighting] = float(
            muesli_loss_tensors(online, target, batch, init_loss_state(), p)[1]["loss/value"]
        )
    assert abs(every["pooled"] - every["per-start"]) > 1e-3, every
