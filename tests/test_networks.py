"""Shapes and gradient scaling of the Muesli networks (common/networks.py)."""

import pytest
import torch

from common.networks import MuesliNet, NetworkSpec, build_network, scale_gradient


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return build_network(NetworkSpec(**kw))


def _check_unroll(net, obs, K, A, S):
    B = obs.shape[0]
    logits = net.policy_logits(obs)
    assert logits.shape == (B, A) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    actions = torch.randint(0, A, (K, B), generator=torch.Generator().manual_seed(1))
    out = net.unroll(obs, actions)
    assert out.policy_logits.shape == (K + 1, B, A)
    assert out.value_logits.shape == (K + 1, B, S)
    assert out.reward_logits.shape == (K, B, S)
    for x in out:
        assert torch.isfinite(x).all()
    # step 0 of the unroll is the plain prediction from the observation
    torch.testing.assert_close(out.policy_logits[0], logits)
    hidden = net.represent(obs)
    assert hidden.shape == (B, net.spec.hidden_size)
    assert hidden.abs().max() <= 1.0  # tanh-squashed
    # step 1 equals dynamics followed by prediction by hand
    h1, r1 = net.dynamics(hidden, actions[0])
    p1, v1 = net.predict(h1)
    torch.testing.assert_close(out.policy_logits[1], p1)
    torch.testing.assert_close(out.value_logits[1], v1)
    torch.testing.assert_close(out.reward_logits[0], r1)
    assert net.to_scalar(out.value_logits).shape == (K + 1, B)
    return out


def test_mlp_shapes_categorical():
    net = _net(obs_shape=(5,), num_actions=3, width=32, hidden_size=16, support_size=10)
    obs = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    _check_unroll(net, obs, K=3, A=3, S=21)


def test_mlp_shapes_scalar_mode():
    net = _net(obs_shape=(5,), num_actions=2, width=32, hidden_size=8, support_size=0)
    assert net.num_bins == 1
    obs = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    out = _check_unroll(net, obs, K=3, A=2, S=1)
    torch.testing.assert_close(net.to_scalar(out.value_logits), out.value_logits[..., 0])


def test_mlp_different_actions_give_different_outputs():
    net = _net(obs_shape=(5,), num_actions=3, width=32, hidden_size=16, support_size=5)
    obs = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    a0 = net.unroll(obs, torch.zeros(1, 2, dtype=torch.long))
    a1 = net.unroll(obs, torch.ones(1, 2, dtype=torch.long))
    assert not torch.allclose(a0.reward_logits, a1.reward_logits)
    torch.testing.assert_close(a0.policy_logits[0], a1.policy_logits[0])


def test_minatar_conv_channels_last_uint8():
    net = _net(
        obs_shape=(10, 10, 4),
        num_actions=6,
        torso="minatar",
        width=32,
        hidden_size=16,
        support_size=5,
    )
    assert net.torso.channels_last
    obs = torch.randint(
        0, 2, (3, 10, 10, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    _check_unroll(net, obs, K=3, A=6, S=11)
    # the same observation as float (already in [0, 1]) gives the same logits as uint8 / 255 scaling
    torch.testing.assert_close(net.policy_logits(obs.float() / 255.0), net.policy_logits(obs))


def test_atari_conv_channels_first_uint8():
    net = _net(
        obs_shape=(4, 84, 84),
        num_actions=18,
        torso="atari",
        width=32,
        hidden_size=16,
        support_size=3,
    )
    assert not net.torso.channels_last
    assert net.torso.out_features == 64 * 7 * 7
    obs = torch.randint(
        0, 256, (2, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    _check_unroll(net, obs, K=3, A=18, S=7)


def test_unknown_torso_and_bad_actions_raise():
    with pytest.raises(ValueError):
        MuesliNet(NetworkSpec(obs_shape=(4, 84, 84), num_actions=2, torso="resnet"))
    net = _net(obs_shape=(5,), num_actions=3, width=16, hidden_size=8)
    with pytest.raises(ValueError):
        net.unroll(torch.zeros(4, 5), torch.zeros(3, 5, dtype=torch.long))  # B mismatch
    with pytest.raises(ValueError):
        net.unroll(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))  # not [K, B]


def test_unroll_zero_steps():
    net = _net(obs_shape=(5,), num_actions=3, width=16, hidden_size=8, support_size=2)
    out = net.unroll(torch.zeros(4, 5), torch.zeros(0, 4, dtype=torch.long))
    assert out.policy_logits.shape == (1, 4, 3) and out.reward_logits.shape == (0, 4, 5)


def test_scale_gradient_identity_forward_scaled_backward():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for s in (0.0, 0.25, 0.5, 1.0, 2.0):
        xg = x.clone().requires_grad_(True)
        y = scale_gradient(xg, s)
        torch.testing.assert_close(y, x, rtol=0, atol=1e-15)
        upstream = torch.arange(12, dtype=torch.float64).reshape(4, 3)
        (y * upstream).sum().backward()
        torch.testing.assert_close(xg.grad, s * upstream, rtol=0, atol=1e-15)


def _rep_grad(net, obs, actions, scale, which):
    net.zero_grad()
    out = net.unroll(obs, actions, hidden_grad_scale=scale)
    loss = (
        out.policy_logits[which].pow(2).sum()
        + out.value_logits[which].sum()
        + out.reward_logits[which - 1].sum()
    )
    loss.backward()
    params = list(net.torso.parameters()) + list(net.represent_head.parameters())
    return torch.cat([p.grad.flatten() for p in params]), [
        p.grad.clone() for p in net.dynamics_parameters()
    ]


def test_hidden_grad_scale_halves_representation_gradient_through_dynamics():
    net = _net(obs_shape=(5,), num_actions=3, width=16, hidden_size=8, support_size=4)
    obs = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    actions = torch.randint(0, 3, (2, 6), generator=torch.Generator().manual_seed(2))
    # K = 1: the only path from step-1 outputs to the representation is through one dynamics step.
    g_half, dyn_half = _rep_grad(net, obs, actions[:1], 0.5, 1)
    g_full, dyn_full = _rep_grad(net, obs, actions[:1], 1.0, 1)
    assert g_full.abs().max() > 1e-4
    torch.testing.assert_close(g_half, 0.5 * g_full, rtol=1e-5, atol=1e-8)
    # the dynamics parameters themselves get the same (unscaled) gradient at K = 1
    for a, b in zip(dyn_half, dyn_full):
        torch.testing.assert_close(a, b)
    # K = 2, step-2 outputs pass two scaled entries: 0.25x
    g_q, _ = _rep_grad(net, obs, actions, 0.5, 2)
    g_f, _ = _rep_grad(net, obs, actions, 1.0, 2)
    torch.testing.assert_close(g_q, 0.25 * g_f, rtol=1e-5, atol=1e-8)
    # forward values do not depend on the scale
    torch.testing.assert_close(
        net.unroll(obs, actions, 0.5).value_logits, net.unroll(obs, actions, 1.0).value_logits
    )


def test_dynamics_parameters_are_exactly_g():
    net = _net(obs_shape=(5,), num_actions=3, width=16, hidden_size=8, support_size=4)
    dyn = {id(p) for p in net.dynamics_parameters()}
    expected = {
        id(p)
        for m in (net.dynamics_net, net.dynamics_state, net.dynamics_reward)
        for p in m.parameters()
    }
    assert dyn == expected and len(dyn) > 0
    assert id(net.represent_head.weight) not in dyn and id(net.policy_head.weight) not in dyn
