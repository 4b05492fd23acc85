"""The Muesli loss (common/losses.py) on a small fake batch: T=6, B=4, A=3, obs dim 5."""

import copy
import dataclasses
import math

import pytest
import torch

from common import cmpo
from common import value_transforms as vt
from common.config import Config
from common.losses import (
    check_batch,
    init_loss_state,
    metrics_to_floats,
    muesli_loss_tensors,
    target_quantities,
)
from common.networks import NetworkSpec, build_network

T, B, A, D = 6, 4, 3, 5
# Episode layout per batch column:
#   b=0: no end inside the sequence (obs[T] bootstraps)
#   b=1: true terminal at step 2 -> steps 3.. are padding; obs[3..] unused
#   b=2: time-limit truncation at step 3 -> steps 4.. padding; obs[4] (final obs) bootstraps, obs[5..] unused
#   b=3: true terminal at the last step T-1 -> obs[T] unused
TERM_COL, TRUNC_COL, LAST_TERM_COL = 1, 2, 3


def learner_loss(online, target, batch, state, p):
    """The loss as the learner takes it (learner/learner.py): muesli_loss_tensors, then its
    metrics as floats. Returns (loss, {name: float}, new LossState)."""
    loss, metrics, state = muesli_loss_tensors(online, target, batch, state, p)
    return loss, metrics_to_floats(metrics), state


def params(**changes):
    """The run defaults' loss view (common/config.Config.loss_params), with every start state
    unrolled, no prior mixture (the hand computations take the target's policy as the prior) and
    the policy terms on the start states (so a start_mask selects them too), then `changes`."""
    base = dict(
        max_starts=0,
        prior_behaviour_weight=0.0,
        prior_uniform_weight=0.0,
        policy_terms_every_state=False,
    )
    return dataclasses.replace(Config().loss_params(), **{**base, **changes})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a thread pool only costs time (badly so on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, B)
    terminal = torch.zeros(T, B)
    terminal[2, TERM_COL] = 1.0
    mask[3:, TERM_COL] = 0.0
    mask[4:, TRUNC_COL] = 0.0
    terminal[T - 1, LAST_TERM_COL] = 1.0
    return dict(
        obs=torch.randn(T + 1, B, D, generator=g),
        action=torch.randint(0, A, (T, B), generator=g),
        reward=torch.randn(T, B, generator=g),
        behaviour=torch.softmax(torch.randn(T, B, A, generator=g), -1),
        mask=mask,
        terminal=terminal,
    )


def make_nets(support_size=5, seed=0):
    torch.manual_seed(seed)
    spec = NetworkSpec(
        obs_shape=(D,), num_actions=A, width=16, depth=2, hidden_size=8, support_size=support_size
    )
    online = build_network(spec)
    target = copy.deepcopy(online)
    # a target that differs from the online net, as after some learning
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return online, target


def loss_and_grads(online, target, batch, p, seed=0):
    online.zero_grad()
    torch.manual_seed(seed)
    loss, metrics, state = learner_loss(online, target, batch, init_loss_state(), p)
    loss.backward()
    grads = {n: q.grad.clone() for n, q in online.named_parameters()}
    return loss.detach(), grads, metrics, state


@pytest.mark.parametrize("support_size", [5, 0])
@pytest.mark.parametrize("reg_samples", [0, 4])
def test_loss_finite_and_gradient_reaches_every_online_parameter(support_size, reg_samples):
    online, target = make_nets(support_size)
    batch = make_batch()
    p = params(
        unroll_steps=3,
        reg_samples=reg_samples,
        prior_behaviour_weight=0.03,
        prior_uniform_weight=0.003,
    )
    loss, metrics, state = learner_loss(online, target, batch, init_loss_state(), p)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    assert metrics["loss/total"] == pytest.approx(loss.item())
    loss.backward()
    for name, q in online.named_parameters():
        assert q.grad is not None, name
        assert torch.isfinite(q.grad).all(), name
        assert q.grad.abs().max() > 0, name
    for name, q in target.named_parameters():
        assert q.requires_grad  # it could receive one, but must not
        assert q.grad is None, name
    for key, value in batch.items():
        assert value.grad is None, key
    assert int(state.adv.count) == 1 and int(state.pg.count) == 1


def test_no_gradient_flows_into_batch_tensors_even_if_they_require_grad():
    batch = make_batch()
    for key in ("obs", "reward", "behaviour", "mask", "terminal"):
        batch[key].requires_grad_(True)
    for support_size in (5, 0):
        online, target = make_nets(support_size)
        loss, _, _ = learner_loss(online, target, batch, init_loss_state(), params(unroll_steps=3))
        loss.backward()
        for key, value in batch.items():
            assert value.grad is None, key
        assert online.value_head.weight.grad is not None


def test_loss_weights_combine_components():
    online, target = make_nets(5)
    batch = make_batch()
    p = params(
        unroll_steps=3,
        pg_weight=1.3,
        reg_weight=0.7,
        value_weight=0.25,
        reward_weight=2.0,
        model_weight=0.5,
    )
    loss, m, _ = learner_loss(online, target, batch, init_loss_state(), p)
    want = (
        1.3 * m["loss/pg"]
        + 0.7 * m["loss/reg"]
        + 0.25 * m["loss/value"]
        + 2.0 * m["loss/reward"]
        + 0.5 * m["loss/model"]
    )
    assert loss.item() == pytest.approx(want, rel=1e-5)
    for key in ("loss/reg", "loss/model", "loss/value", "loss/reward"):
        assert m[key] > 0


def test_hidden_grad_scale_changes_gradient_not_loss():
    online, target = make_nets(5)
    batch = make_batch()
    l_half, g_half, _, _ = loss_and_grads(
        online, target, batch, params(unroll_steps=3, hidden_grad_scale=0.5)
    )
    l_full, g_full, _, _ = loss_and_grads(
        online, target, batch, params(unroll_steps=3, hidden_grad_scale=1.0)
    )
    assert l_half.item() == pytest.approx(l_full.item(), abs=1e-6)
    assert not torch.allclose(g_half["represent_head.weight"], g_full["represent_head.weight"])
    # the heads only see gradients from their own outputs: unchanged
    torch.testing.assert_close(g_half["value_head.weight"], g_full["value_head.weight"])


def _edit_padding(batch, seed):
    """Randomise everything the mask says is padding (and obs nobody should read)."""
    g = torch.Generator().manual_seed(seed)
    b = {k: v.clone() for k, v in batch.items()}
    for col, first_pad in ((TERM_COL, 3), (TRUNC_COL, 4)):
        n = T - first_pad
        b["reward"][first_pad:, col] = torch.randn(n, generator=g) * 50
        b["action"][first_pad:, col] = torch.randint(0, A, (n,), generator=g)
        b["behaviour"][first_pad:, col] = torch.softmax(torch.randn(n, A, generator=g) * 3, -1)
        b["terminal"][first_pad:, col] = (torch.rand(n, generator=g) < 0.5).float()
    b["obs"][3:, TERM_COL] = torch.randn(T + 1 - 3, D, generator=g) * 10  # from the final obs on
    b["obs"][5:, TRUNC_COL] = torch.randn(T + 1 - 5, D, generator=g) * 10  # after the final obs
    # final obs after a terminal
    b["obs"][T, LAST_TERM_COL] = torch.randn(D, generator=g) * 10
    return b


@pytest.mark.parametrize("support_size", [5, 0])
@pytest.mark.parametrize(
    "p",
    [
        params(unroll_steps=3),
        params(unroll_steps=2, value_target="mc"),
        params(
            unroll_steps=3, reg_samples=4, prior_behaviour_weight=0.1, prior_uniform_weight=0.01
        ),
    ],
)
def test_padding_does_not_change_loss_or_gradients(support_size, p):
    online, target = make_nets(support_size)
    batch = make_batch()
    base_loss, base_grads, _, base_state = loss_and_grads(online, target, batch, p)
    for seed in (1, 2):
        edited = _edit_padding(batch, seed)
        assert not torch.equal(edited["obs"], batch["obs"])
        loss, grads, _, state = loss_and_grads(online, target, edited, p)
        torch.testing.assert_close(loss, base_loss, rtol=1e-6, atol=1e-6)
        for name in base_grads:
            torch.testing.assert_close(grads[name], base_grads[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(state.adv.second_moment, base_state.adv.second_moment)
        torch.testing.assert_close(state.pg.second_moment, base_state.pg.second_moment)


@pytest.mark.parametrize(
    "col,index", [(TRUNC_COL, 4), (0, T), (TERM_COL, 2), (LAST_TERM_COL, T - 1)]
)
def test_real_observations_are_used(col, index):
    """Control for the padding test: the final observation of a truncation (and of a sequence that did
    not end), and real observations, do change the loss."""
    online, target = make_nets(5)
    # a fresh value head predicts ~0 everywhere: make the target's values depend on obs
    with torch.no_grad():
        target.value_head.weight.mul_(10.0)
    batch = make_batch()
    p = params(unroll_steps=3)
    base_loss, _, _, _ = loss_and_grads(online, target, batch, p)
    edited = {k: v.clone() for k, v in batch.items()}
    edited["obs"][index, col] = torch.randn(D, generator=torch.Generator().manual_seed(3)) * 10
    loss, _, _, _ = loss_and_grads(online, target, edited, p)
    assert abs(loss.item() - base_loss.item()) > 1e-5


def test_target_quantities_bootstrap_and_cut():
    online, target = make_nets(5)
    batch = make_batch()
    p = params(unroll_steps=3, discount=0.9)
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    G, v, r = tq["returns"], tq["value"], batch["reward"]
    # true terminal: the last real step's return is just its reward
    assert G[2, TERM_COL].item() == pytest.approx(r[2, TERM_COL].item(), abs=1e-6)
    assert G[T - 1, LAST_TERM_COL].item() == pytest.approx(r[T - 1, LAST_TERM_COL].item(), abs=1e-6)
    # truncation: bootstraps from the final observation's value
    assert G[3, TRUNC_COL].item() == pytest.approx(
        r[3, TRUNC_COL].item() + 0.9 * v[4, TRUNC_COL].item(), abs=1e-5
    )
    assert G[T - 1, 0].item() == pytest.approx(r[T - 1, 0].item() + 0.9 * v[T, 0].item(), abs=1e-5)
    # state validity: real non-terminal states only
    sv = tq["state_valid"]
    assert sv[:, 0].tolist() == [1.0] * (T + 1)
    assert sv[:, TERM_COL].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert sv[:, TRUNC_COL].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert sv[:, LAST_TERM_COL].tolist() == [1] * T + [0]
    # CMPO targets are distributions; the prior is the target network's policy (no mixing here)
    torch.testing.assert_close(tq["cmpo_log_probs"].exp().sum(-1), torch.ones(T + 1, B))
    prior = torch.softmax(target.policy_logits(batch["obs"].reshape(-1, D)), -1).reshape(
        T + 1, B, A
    )
    torch.testing.assert_close(tq["prior_log_probs"].exp(), prior, rtol=1e-5, atol=1e-6)
    # one-step q from the target model, by hand for one state/action
    h0 = target.represent(batch["obs"][1, 0][None])
    h1, r_logits = target.dynamics(h0, torch.tensor([2]))
    q = target.to_scalar(r_logits) + 0.9 * target.to_scalar(target.predict(h1)[1])
    assert tq["q"][1, 0, 2].item() == pytest.approx(q.item(), abs=1e-5)


def test_value_target_mc_and_retrace_differ_and_bad_name_raises():
    online, target = make_nets(5)
    batch = make_batch()
    tq_r, _ = target_quantities(target, batch, init_loss_state(), params(unroll_steps=3))
    tq_m, _ = target_quantities(
        target, batch, init_loss_state(), params(unroll_steps=3, value_target="mc")
    )
    assert not torch.allclose(tq_r["returns"][:, 0], tq_m["returns"][:, 0])
    # 'mc' = discounted rewards + bootstrap at the end, with terminals cut
    G = tq_m["returns"][:, 0]
    want = tq_m["value"][T, 0]
    for t in reversed(range(T)):
        want = batch["reward"][t, 0] + 0.99 * want
        assert G[t].item() == pytest.approx(want.item(), abs=1e-4)
    loss, _, _ = learner_loss(
        online, target, batch, init_loss_state(), params(unroll_steps=3, value_target="mc")
    )
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="value_target"):
        learner_loss(online, target, batch, init_loss_state(), params(value_target="td"))


def test_exact_and_sampled_regulariser_both_run_and_agree_roughly():
    online, target = make_nets(5)
    batch = make_batch()
    _, m_exact = learner_loss(online, target, batch, init_loss_state(), params(unroll_steps=3))[:2]
    torch.manual_seed(0)
    _, m_sampled = learner_loss(
        online, target, batch, init_loss_state(), params(unroll_steps=3, reg_samples=64)
    )[:2]
    assert m_exact["loss/reg"] >= 0
    # exact is KL (the entropy of pi_cmpo subtracted), sampled is a cross-entropy estimate: CE >= KL
    assert m_sampled["loss/reg"] > m_exact["loss/reg"]
    for key in ("loss/pg", "loss/model", "loss/value", "loss/reward"):
        assert m_sampled[key] == pytest.approx(m_exact[key], rel=1e-5, abs=1e-6)


def _loop_model_losses(online, target, batch, p):
    """Value, reward and model losses start state by start state, step by step (the reference for any K):
    a term at unroll step k of start (t, b) counts when its data is real: value while step t+k is,
    reward and model while action a_{t+k-1} was taken, the model also only while s_{t+k} is a real state.
    Categorical heads with s_max = online.spec.support_size."""
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    K, s_max = p.unroll_steps, online.spec.support_size
    mask, terminal = batch["mask"].tolist(), batch["terminal"].tolist()
    sums = {"value": [0.0, 0], "reward": [0.0, 0], "model": [0.0, 0]}

    def add(key, x):
        sums[key][0] += float(x)
        sums[key][1] += 1

    def ce(logits, scalar):
        return -(vt.scalar_to_categorical(scalar, s_max) * torch.log_softmax(logits, -1)).sum()

    for t in range(T):
        for b in range(B):
            if not mask[t][b]:
                continue
            acts = [int(batch["action"][t + k, b]) if t + k < T else 0 for k in range(K)]
            with torch.no_grad():
                out = online.unroll(batch["obs"][t, b][None], torch.tensor(acts).reshape(K, 1))
            for k in range(K + 1):
                if t + k < T and mask[t + k][b]:
                    add("value", ce(out.value_logits[k, 0], tq["returns"][t + k, b]))
                if k == 0 or t + k - 1 >= T or not mask[t + k - 1][b]:
                    continue
                add("reward", ce(out.reward_logits[k - 1, 0], batch["reward"][t + k - 1, b]))
                state_real = mask[t + k][b] if t + k < T else 1 - terminal[T - 1][b]
                if state_real:
                    log_pi = torch.log_softmax(out.policy_logits[k, 0], -1)
                    target_p = tq["cmpo_log_probs"][t + k, b].exp()
                    add("model", (target_p * (target_p.log() - log_pi)).sum())
    return {key: total / max(n, 1) for key, (total, n) in sums.items()}


@pytest.mark.parametrize("K", [0, 1, 4, T + 2])
def test_unroll_lengths_match_a_loop_over_start_states(K):
    online, target = make_nets(5)
    batch = make_batch()
    p = params(unroll_steps=K)
    _, m, _ = learner_loss(online, target, batch, init_loss_state(), p)
    want = _loop_model_losses(online, target, batch, p)
    for key in ("value", "reward", "model"):
        assert m[f"loss/{key}"] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    if K == 0:
        assert m["loss/model"] == 0.0 and m["loss/reward"] == 0.0


def test_start_mask_selects_start_states():
    online, target = make_nets(5)
    batch = make_batch()
    p = params(unroll_steps=2)
    base, _, _ = learner_loss(online, target, batch, init_loss_state(), p)
    same, _, _ = learner_loss(
        online, target, dict(batch, start_mask=torch.ones(T, B)), init_loss_state(), p
    )
    torch.testing.assert_close(same, base)  # start_mask is combined with mask
    only = torch.zeros(T, B)
    only[0, 0] = 1.0
    one, m, _ = learner_loss(online, target, dict(batch, start_mask=only), init_loss_state(), p)
    assert not torch.allclose(one, base)
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    log_pi = torch.log_softmax(online.policy_logits(batch["obs"][0, :1]), -1)[0]
    want_reg = cmpo.exact_kl(tq["cmpo_log_probs"][0, 0], log_pi)
    assert m["loss/reg"] == pytest.approx(want_reg.item(), rel=1e-5)
    want_v = 0.0
    out = online.unroll(batch["obs"][0, :1], batch["action"][:2, :1])
    for k in range(3):
        target_dist = vt.scalar_to_categorical(tq["returns"][k, 0], 5)
        want_v += -(target_dist * torch.log_softmax(out.value_logits[k, 0], -1)).sum().item() / 3
    assert m["loss/value"] == pytest.approx(want_v, rel=1e-5)


@pytest.mark.parametrize("max_starts", [1, 5, T * B, 10 * T * B])
def test_a_fixed_number_of_start_states_gives_the_same_loss_and_gradients(max_starts):
    """max_starts fixes how many start states are unrolled (fillers weigh 0) so shapes never
    depend on the data; with at least as many as start_mask chooses, nothing changes."""
    online, target = make_nets(5)
    batch = make_batch()
    chosen = torch.zeros(T, B)
    chosen[0, 0] = 1.0
    if max_starts >= 5:
        chosen[[1, 4, 5, 2], [0, 1, 2, 3]] = 1.0
    batch = dict(batch, start_mask=chosen)
    loss, grads = loss_and_grads(online, target, batch, params(unroll_steps=2))[:2]
    fixed, fixed_grads = loss_and_grads(
        online, target, batch, params(unroll_steps=2, max_starts=max_starts)
    )[:2]
    torch.testing.assert_close(fixed, loss)
    for name in grads:
        torch.testing.assert_close(fixed_grads[name], grads[name], msg=name)


@pytest.mark.parametrize("support_size", [5, 0])
def test_adam_steps_lower_the_loss(support_size):
    online, target = make_nets(support_size, seed=1)
    target.requires_grad_(False)
    batch = make_batch(seed=4)
    p = params(unroll_steps=3)
    state = init_loss_state()
    opt = torch.optim.Adam(online.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss, _, _ = learner_loss(online, target, batch, state, p)  # same state: fixed targets
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final, _, _ = learner_loss(online, target, batch, state, p)
    assert final.item() < losses[0] - 0.25 * abs(losses[0]), (losses[0], final.item())


def test_check_batch_names_the_bad_field():
    good = make_batch()
    check_batch(good, A)
    cases = {
        "action": torch.zeros(T, dtype=torch.long),
        "reward": torch.zeros(T, B + 1),
        "mask": torch.zeros(T + 1, B),
        "terminal": torch.zeros(B, T),
        "behaviour": torch.zeros(T, B, A + 1),
        "obs": torch.zeros(T, B, D),
    }
    for key, bad in cases.items():
        batch = dict(good, **{key: bad})
        with pytest.raises(ValueError, match=key):
            check_batch(batch, A)
        online, target = make_nets(5)
        with pytest.raises(ValueError, match=key):
            learner_loss(online, target, batch, init_loss_state(), params(unroll_steps=2))


def _uniform_policy_nets(value=1.0, reward=1.0):
    """Scalar-head nets whose every state has value `value`, every model step reward `reward`, and
    whose policy is uniform (1/A): zeroed head weights leave only the biases. Online and target alike."""
    spec = NetworkSpec(
        obs_shape=(D,), num_actions=A, width=16, depth=2, hidden_size=8, support_size=0
    )
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_network(spec)
        with torch.no_grad():
            for head, bias in (
                (net.value_head, value),
                (net.dynamics_reward, reward),
                (net.policy_head, 0.0),
            ):
                head.weight.zero_()
                head.bias.fill_(bias)
        nets.append(net)
    return nets


def _three_step_batch(mu_taken):
    """T=3, B=1, no episode end; actions 0, 1, 2 taken with behaviour probability mu_taken[t]."""
    behaviour = torch.zeros(3, 1, A)
    for t, m in enumerate(mu_taken):
        behaviour[t, 0] = (1.0 - m) / (A - 1)
        behaviour[t, 0, t] = m
    return dict(
        obs=torch.randn(4, 1, D, generator=torch.Generator().manual_seed(0)),
        action=torch.tensor([[0], [1], [2]]),
        reward=torch.tensor([[1.0], [2.0], [3.0]]),
        behaviour=behaviour,
        mask=torch.ones(3, 1),
        terminal=torch.zeros(3, 1),
    )


# pi = 1/3 everywhere; mu(a_t) = 0.5, 0.1, 0.6 -> pi/mu = 2/3, 10/3, 5/9
MU_TAKEN = (0.5, 0.1, 0.6)


def _hand_retrace_returns(lam=0.95, gamma=0.9, v=1.0):
    """Retrace with c_t = lam * min(1, pi/mu): c_1 = lam * 1 (10/3 truncated), c_2 = lam * 5/9, and
    v standing for E q(s, .) and q(s, a_t) alike: the state value, or the model's q where every
    action's q is the same."""
    c1, c2 = lam * 1.0, lam * 5.0 / 9.0
    g2 = 3.0 + gamma * v
    g1 = 2.0 + gamma * (v + c2 * (g2 - v))
    g0 = 1.0 + gamma * (v + c1 * (g1 - v))
    return [g0, g1, g2]


def test_retrace_traces_are_truncated_at_one():
    _, target = _uniform_policy_nets(value=1.0)
    p = params(unroll_steps=1, discount=0.9, retrace_lambda=0.95)
    tq, _ = target_quantities(target, _three_step_batch(MU_TAKEN), init_loss_state(), p)
    # 4.7023, 4.2775, 3.9; untruncated c_1 = 3.17 gives G_0 = 11.24
    want = _hand_retrace_returns()
    torch.testing.assert_close(tq["returns"][:, 0], torch.tensor(want), rtol=0, atol=1e-5)


def test_policy_gradient_importance_ratio_is_clipped_at_one():
    online, target = _uniform_policy_nets(value=1.0)
    p = params(unroll_steps=1, discount=0.9, retrace_lambda=0.95)
    _, m, _ = learner_loss(online, target, _three_step_batch(MU_TAKEN), init_loss_state(), p)
    ratio = [2.0 / 3.0, 1.0, 5.0 / 9.0]  # min(1, pi/mu): 10/3 clipped to 1
    assert m["stats/is_ratio_mean"] == pytest.approx(sum(ratio) / 3, abs=1e-6)
    # pg advantage (G - v) / rms(G - v) after one normaliser update (bias-corrected: the plain rms)
    adv = [g - 1.0 for g in _hand_retrace_returns()]
    rms = (sum(a * a for a in adv) / 3) ** 0.5
    want = -sum(r * a / rms for r, a in zip(ratio, adv)) / 3
    assert m["loss/pg"] == pytest.approx(want, abs=1e-5)


def test_sampled_regulariser_clips_the_advantages():
    # v = 1 and r_hat = 1 everywhere: q - v = 1 + 0.9 * 1 - 1 = 0.9 for every action, normalised to 1,
    # clipped to c = 0.5. Every sample then has w = N e^c / (1 + (N - 1) e^c) and log pi = -log 3,
    # so the regulariser is w log 3 whatever actions were drawn.
    online, target = _uniform_policy_nets(value=1.0, reward=1.0)
    N, c = 4, 0.5
    p = params(unroll_steps=1, discount=0.9, reg_samples=N, cmpo_clip=c)
    torch.manual_seed(0)
    _, m, _ = learner_loss(online, target, _three_step_batch(MU_TAKEN), init_loss_state(), p)
    w = N * math.exp(c) / (1 + (N - 1) * math.exp(c))  # 1.1091; unclipped (adv 1) 1.1877
    assert m["loss/reg"] == pytest.approx(w * math.log(3.0), abs=1e-5)


# --- the paper's forms (retrace_q, value_head_target, pg_normalizer, policy_terms_every_state) ---


def test_retrace_with_the_models_q_by_hand():
    _, target = _uniform_policy_nets(value=1.0, reward=1.0)
    # uniform nets with v = 1 and r_hat = 1: q(s, a) = 1 + 0.9 * 1 = 1.9 for every action
    p = params(unroll_steps=1, discount=0.9, retrace_lambda=0.95, retrace_q="model")
    tq, _ = target_quantities(target, _three_step_batch(MU_TAKEN), init_loss_state(), p)
    # 5.7578, 5.1245, 4.71 (with v in place of q: 4.7023, 4.2775, 3.9)
    want = _hand_retrace_returns(v=1.9)
    torch.testing.assert_close(tq["returns"][:, 0], torch.tensor(want), rtol=0, atol=1e-5)


def _brute_force_targets(tq, batch, p):
    """Python loops over the Retrace recursion with the model's q, and V_t = E q + c_t (G_t - q_t)."""
    prior, q = tq["prior_log_probs"].exp(), tq["q"]
    G, V = torch.zeros(T, B), torch.zeros(T, B)
    for b in range(B):
        traces = []
        for t in range(T):
            a = batch["action"][t, b]
            ratio = prior[t, b, a] / batch["behaviour"][t, b, a].clamp(min=1e-8)
            traces.append(p.retrace_lambda * min(1.0, ratio.item()) * batch["mask"][t, b].item())
        g_next = None
        for t in reversed(range(T)):
            discount = p.discount * (1.0 - batch["terminal"][t, b].item())
            e_q_next = (prior[t + 1, b] * q[t + 1, b]).sum().item()
            correction = 0.0
            if t + 1 < T:
                correction = traces[t + 1] * (
                    g_next - q[t + 1, b, batch["action"][t + 1, b]].item()
                )
            G[t, b] = batch["reward"][t, b].item() + discount * (e_q_next + correction)
            g_next = G[t, b].item()
            e_q = (prior[t, b] * q[t, b]).sum().item()
            V[t, b] = e_q + traces[t] * (G[t, b].item() - q[t, b, batch["action"][t, b]].item())
    return G, V


def test_model_q_returns_and_state_value_targets_against_loops():
    """Random nets (q differs per action), the padded / terminal / truncated columns of make_batch."""
    _, target = make_nets(5)
    batch = make_batch()
    p = params(
        unroll_steps=3,
        retrace_q="model",
        value_head_target="value",
        prior_behaviour_weight=0.03,
        prior_uniform_weight=0.003,
    )
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    G, V = _brute_force_targets(tq, batch, p)
    mask = batch["mask"] > 0
    torch.testing.assert_close(tq["returns"][mask], G[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tq["value_targets"][mask], V[mask], rtol=1e-5, atol=1e-5)
    # the default value head target is the return itself
    tq_return, _ = target_quantities(
        target, batch, init_loss_state(), dataclasses.replace(p, value_head_target="return")
    )
    torch.testing.assert_close(tq_return["value_targets"], tq_return["returns"], rtol=0, atol=0)
    assert not torch.allclose(tq["value_targets"][mask], G[mask], atol=1e-3)


def test_state_value_target_by_hand_and_used_by_the_value_loss():
    online, target = _uniform_policy_nets(value=1.0, reward=1.0)
    p = params(
        unroll_steps=0,
        discount=0.9,
        retrace_lambda=0.95,
        retrace_q="model",
        value_head_target="value",
    )
    batch = _three_step_batch(MU_TAKEN)
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    G = _hand_retrace_returns(v=1.9)
    c = [0.95 * 2.0 / 3.0, 0.95, 0.95 * 5.0 / 9.0]  # lambda min(1, pi/mu) of the taken actions
    want = [1.9 + ci * (g - 1.9) for ci, g in zip(c, G)]  # 4.3397, 4.9683, 3.3568
    torch.testing.assert_close(tq["value_targets"][:, 0], torch.tensor(want), rtol=0, atol=1e-5)
    # scalar heads, K = 0: L_value = mean_t 0.5 (v_hat(s_t) - V_t)^2 with v_hat = 1
    _, m, _ = learner_loss(online, target, batch, init_loss_state(), p)
    assert m["loss/value"] == pytest.approx(sum(0.5 * (1.0 - v) ** 2 for v in want) / 3, abs=1e-4)


def test_shared_normaliser_scales_the_policy_gradient_by_the_cmpo_advantages():
    """Uniform nets: q - v = 1.9 - 1 = 0.9 for every state and action, so the shared scale is 0.9,
    while the own scale is the rms of G - v."""
    online, target = _uniform_policy_nets(value=1.0, reward=1.0)
    batch = _three_step_batch(MU_TAKEN)
    ratio = [2.0 / 3.0, 1.0, 5.0 / 9.0]
    adv = [g - 1.0 for g in _hand_retrace_returns()]
    for normalizer, scale in (("shared", 0.9), ("own", (sum(a * a for a in adv) / 3) ** 0.5)):
        p = params(unroll_steps=1, discount=0.9, retrace_lambda=0.95, pg_normalizer=normalizer)
        _, m, state = learner_loss(online, target, batch, init_loss_state(), p)
        want = -sum(r * a / scale for r, a in zip(ratio, adv)) / 3
        assert m["loss/pg"] == pytest.approx(want, abs=1e-5), normalizer
        assert m["stats/pg_adv_std"] == pytest.approx(scale, abs=1e-5), normalizer
        assert state.pg.count.item() == (0 if normalizer == "shared" else 1), normalizer


def test_policy_terms_on_every_state_while_only_the_unroll_is_subsampled():
    """With a start subsample and policy_terms_every_state: L_pg and L_reg equal those of a run
    without the subsample; L_model and L_reward those of the subsampled run; L_value is one mean
    over the k = 0 terms of every valid state and the k >= 1 terms of the starts (by a loop)."""
    online, target = make_nets(5)
    batch = make_batch()
    chosen = torch.zeros(T, B)
    chosen[[0, 1, 4, 2], [0, 1, 2, 3]] = 1.0
    p = params(unroll_steps=2, max_starts=4)
    _, full, _ = learner_loss(
        online, target, batch, init_loss_state(), dataclasses.replace(p, max_starts=0)
    )
    _, sub, _ = learner_loss(online, target, dict(batch, start_mask=chosen), init_loss_state(), p)
    every = dataclasses.replace(p, policy_terms_every_state=True)
    _, m, _ = learner_loss(online, target, dict(batch, start_mask=chosen), init_loss_state(), every)
    for name in ("loss/pg", "loss/reg", "stats/entropy", "stats/is_ratio_mean"):
        assert m[name] == pytest.approx(full[name], rel=1e-5), name
    for name in ("loss/model", "loss/reward"):
        assert m[name] == pytest.approx(sub[name], rel=1e-5), name
    assert m["loss/pg"] != pytest.approx(sub["loss/pg"], rel=1e-3)
    tq, _ = target_quantities(target, batch, init_loss_state(), p)
    total, count = 0.0, 0.0
    for t in range(T):
        for b in range(B):
            if batch["mask"][t, b] == 0:
                continue
            steps = [0]
            if chosen[t, b]:
                steps += [k for k in (1, 2) if t + k < T and batch["mask"][t + k, b] > 0]
            out = online.unroll(
                batch["obs"][t, b][None],
                batch["action"][t : t + 2, b][:, None].clone()
                if t + 2 <= T
                else torch.zeros(2, 1, dtype=torch.long),
            )
            for k in steps:
                dist = vt.scalar_to_categorical(tq["value_targets"][t + k, b], 5)
                total += -(dist * torch.log_softmax(out.value_logits[k, 0], -1)).sum().item()
                count += 1
    assert m["loss/value"] == pytest.approx(total / count, rel=1e-5)
