"""actors/numpy_policy.py: the numpy acting path equals softmax(MuesliNet.policy_logits)."""

import numpy as np
import pytest
import torch

from actors.numpy_policy import policy_layers, policy_probs
from common.networks import MuesliNet, NetworkSpec


def torch_probs(net, obs):
    with torch.no_grad():
        return torch.softmax(net.policy_logits(torch.as_tensor(obs)), -1).numpy()


@pytest.mark.parametrize(
    "obs_shape, depth, width, hidden, actions",
    [
        # config enforces depth >= 1
        ((4,), 2, 64, 64, 2),
        ((8,), 1, 16, 4, 4),
        ((2, 3), 3, 32, 8, 5),
    ],
)
def test_matches_torch_for_mlp_networks(obs_shape, depth, width, hidden, actions):
    torch.manual_seed(0)
    net = MuesliNet(NetworkSpec(obs_shape, actions, "mlp", width, depth, hidden, support_size=5))
    obs = np.random.default_rng(1).normal(scale=2.0, size=(16,) + obs_shape).astype(np.float32)
    layers = policy_layers(net)
    assert layers is not None and len(layers) == depth + 1 + depth + 1
    probs = policy_probs(layers, obs)
    assert probs.shape == (16, actions) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, torch_probs(net, obs), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_uint8_observations_are_scaled_like_the_network():
    torch.manual_seed(0)
    net = MuesliNet(NetworkSpec((5,), 3, "mlp", 16, 2, 8))
    obs = np.random.default_rng(2).integers(0, 256, size=(4, 5)).astype(np.uint8)
    np.testing.assert_allclose(
        policy_probs(policy_layers(net), obs), torch_probs(net, obs), atol=1e-6
    )


def test_layers_are_copies_taken_at_call_time():
    net = MuesliNet(NetworkSpec((4,), 2, "mlp", 8, 1, 4))
    obs = np.ones((2, 4), np.float32)
    before = policy_layers(net)
    with torch.no_grad():
        net.policy_head.bias += 5.0 * torch.tensor([1.0, -1.0])
    np.testing.assert_allclose(
        policy_probs(policy_layers(net), obs), torch_probs(net, obs), atol=1e-6
    )
    assert not np.allclose(policy_probs(before, obs), torch_probs(net, obs), atol=1e-3)


def test_conv_torsos_and_unknown_modules_fall_back_to_torch():
    assert policy_layers(MuesliNet(NetworkSpec((10, 10, 4), 3, "minatar", 16, 1, 8))) is None
    net = MuesliNet(NetworkSpec((4,), 2, "mlp", 8, 1, 4))
    net.prediction_net.append(torch.nn.LayerNorm(8))
    assert policy_layers(net) is None
