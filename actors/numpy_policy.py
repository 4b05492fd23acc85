"""The acting forward pass of an MLP-torso MuesliNet in numpy.

Shape legend: B rows (envs), O observation shape, A actions.

    probs = softmax(policy_head(f(tanh(represent_head(torso(flatten(obs)))))))

which is `softmax(MuesliNet.policy_logits(obs))`, with every Linear as x @ W^T + b. For
the 16-row batches an actor steps, numpy's per-call overhead is a fraction of torch's
module dispatch (about 47 us against 139 us for the default 2x64 network on this
project's machine), and the actor calls this once per env step.

The layers are read from the network's own modules, in order, so the two paths cannot
drift apart: a module type this file does not know (a conv torso, a norm layer) makes
`policy_layers` return None and the caller keeps using torch.
"""

import numpy as np
from torch import nn

Layer = tuple[np.ndarray, np.ndarray, str]  # W^T [in, out], b [out], activation after it


def _linear_stack(modules, last_activation: str = "") -> list[Layer] | None:
    layers: list[Layer] = []
    for module in modules:
        if isinstance(module, nn.Flatten):
            continue
        if isinstance(module, nn.Sequential):
            inner = _linear_stack(module)
            if inner is None:
                return None
            layers += inner
        elif isinstance(module, nn.Linear):
            layers.append(
                (
                    module.weight.detach().cpu().numpy().T.copy(),
                    module.bias.detach().cpu().numpy().copy(),
                    "",
                )
            )
        elif isinstance(module, nn.ReLU) and layers and not layers[-1][2]:
            layers[-1] = (*layers[-1][:2], "relu")
        else:
            return None
    if last_activation and layers:
        layers[-1] = (*layers[-1][:2], last_activation)
    return layers


def policy_layers(net) -> list[Layer] | None:
    """Copies of the weights on the path obs -> policy logits, or None when the network's
    torso is not an MLP of Linear and ReLU layers."""
    if getattr(net.spec, "torso", None) != "mlp":
        return None
    parts = [
        _linear_stack(net.torso),
        _linear_stack([net.represent_head], "tanh"),
        _linear_stack(net.prediction_net),
        _linear_stack([net.policy_head]),
    ]
    if any(part is None for part in parts):
        return None
    return [layer for part in parts for layer in part]


def policy_probs(layers: list[Layer], obs: np.ndarray) -> np.ndarray:
    """obs [B, *O] -> action probabilities [B, A] float32 (uint8 observations are scaled
    by 1/255 first, as MuesliNet.represent does)."""
    x = obs.reshape(obs.shape[0], -1)
    x = (
        x.astype(np.float32) / np.float32(255.0)
        if x.dtype == np.uint8
        else x.astype(np.float32, copy=False)
    )
    for weight, bias, activation in layers:
        x = x @ weight
        x += bias
        if activation == "relu":
            np.maximum(x, 0.0, out=x)
        elif activation == "tanh":
            np.tanh(x, out=x)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x
