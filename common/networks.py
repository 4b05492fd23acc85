"""Muesli networks: representation h, dynamics g, prediction f.

Shape legend: B batch, K unroll steps, A actions, H hidden size, S support bins
(S = 2 s_max + 1 for categorical heads, 1 for scalar heads), O observation shape.

  hidden_0         = h(obs)
  hidden_k, r_k    = g(scale_gradient(hidden_{k-1}, s), one_hot(a_{k-1}))   k = 1..K
  logits_k, v_k    = f(hidden_k)                                          k = 0..K

Observations may be uint8 (images; `represent` scales them to [0, 1], so they travel as
uint8 up to the network) or float. The torso is an MLP over the flattened observation or a
conv stack for rank-3 images; `auto_torso` picks one from the observation shape.
The hidden state is squashed with tanh so unrolled states stay in a fixed range.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from common import value_transforms as vt


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward: one op each way."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by `scale` (MuZero)."""
    if scale == 1.0:
        return x
    return _ScaleGradient.apply(x, scale)


def mlp(sizes: Sequence[int], activate_last: bool = False) -> nn.Sequential:
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or activate_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


TORSOS = ("mlp", "atari", "minatar")
ATARI_MIN_SIZE = 36  # smallest H, W the Nature-DQN stack accepts: 36 -> 8 -> 3 -> 1
MINATAR_MIN_SIZE = 3


def channels_last(obs_shape: Sequence[int]) -> bool:
    """Image layout of a rank-3 shape: [H, W, C] when the last dim is the smaller end
    (MinAtar [10, 10, 4]), else [C, H, W] (stacked Atari frames [4, 84, 84])."""
    return obs_shape[-1] < obs_shape[0]


def image_size(obs_shape: Sequence[int]) -> tuple:
    """(H, W) of a rank-3 image shape."""
    return tuple(obs_shape[:2]) if channels_last(obs_shape) else tuple(obs_shape[1:])


def auto_torso(obs_shape: Sequence[int]) -> str:
    """Rank-3 observations are images: the Nature-DQN stack ('atari') when H, W >= 36,
    else one 3x3 conv ('minatar'). Everything else goes flattened through the MLP."""
    if len(obs_shape) != 3:
        return "mlp"
    return "atari" if min(image_size(obs_shape)) >= ATARI_MIN_SIZE else "minatar"


def torso_problem(torso: str, obs_shape: Sequence[int]) -> str | None:
    """Why `torso` cannot take observations of `obs_shape` (None when it can)."""
    if torso not in TORSOS:
        return f"unknown torso {torso!r}; allowed: {', '.join(TORSOS)}"
    if torso == "mlp":
        return None
    if len(obs_shape) != 3:
        return f"the {torso!r} conv torso needs images [C, H, W] or [H, W, C]; use 'mlp'"
    smallest = ATARI_MIN_SIZE if torso == "atari" else MINATAR_MIN_SIZE
    if min(image_size(obs_shape)) < smallest:
        return f"the {torso!r} conv torso needs images of at least {smallest}x{smallest}"
    return None


class ConvTorso(nn.Module):
    """Conv torso for float image observations in [0, 1], [B, C, H, W] or [B, H, W, C] -> features [B, F].

    'atari': Nature-DQN stack for 84x84 frames; 'minatar': one 3x3 conv for 10x10xC grids.
    Channel-last inputs [B, H, W, C] (MinAtar) are detected by the smaller last dim.
    """

    def __init__(self, obs_shape: Sequence[int], kind: str):
        super().__init__()
        problem = torso_problem(kind, obs_shape)
        if problem:
            raise ValueError(f"observations of shape {tuple(obs_shape)}: {problem}")
        self.channels_last = channels_last(obs_shape)
        c = obs_shape[-1] if self.channels_last else obs_shape[0]
        if kind == "atari":
            self.net = nn.Sequential(
                nn.Conv2d(c, 32, 8, stride=4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=1),
                nn.ReLU(),
                nn.Flatten(),
            )
        elif kind == "minatar":
            self.net = nn.Sequential(nn.Conv2d(c, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        else:
            raise ValueError(f"unknown conv torso {kind!r}; allowed: 'atari', 'minatar'")
        with torch.no_grad():
            self.out_features = self.forward(torch.zeros(1, *obs_shape)).shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2) if self.channels_last else x)


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture of a MuesliNet (plain values, no config object)."""

    obs_shape: tuple
    num_actions: int
    torso: str = "mlp"  # 'mlp', 'atari', 'minatar'
    width: int = 128  # MLP width of every sub-network
    depth: int = 2  # hidden layers per MLP
    hidden_size: int = 64  # model state size H
    support_size: int = 0  # s_max of categorical value/reward heads; 0 = scalar heads


class UnrollOutput(NamedTuple):
    policy_logits: torch.Tensor  # [K+1, B, A]
    value_logits: torch.Tensor  # [K+1, B, S]
    reward_logits: torch.Tensor  # [K, B, S]


class MuesliNet(nn.Module):
    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        A, H, W, D = spec.num_actions, spec.hidden_size, spec.width, spec.depth
        self.num_bins = 2 * spec.support_size + 1 if spec.support_size > 0 else 1
        if spec.torso == "mlp":
            obs_dim = int(torch.tensor(spec.obs_shape).prod())
            self.torso = nn.Sequential(nn.Flatten(), mlp([obs_dim] + [W] * D, activate_last=True))
            torso_out = W
        else:
            self.torso = ConvTorso(spec.obs_shape, spec.torso)
            torso_out = self.torso.out_features
        self.represent_head = nn.Linear(torso_out, H)
        self.dynamics_net = mlp([H + A] + [W] * D, activate_last=True)
        self.dynamics_state = nn.Linear(W, H)
        self.dynamics_reward = nn.Linear(W, self.num_bins)
        self.prediction_net = mlp([H] + [W] * D, activate_last=True)
        self.policy_head = nn.Linear(W, A)
        self.value_head = nn.Linear(W, self.num_bins)

    # -- the three functions -------------------------------------------------------------
    def represent(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, *O] -> hidden [B, H]; uint8 observations (images) are scaled by 1/255 here,
        on the network's device, so they travel and are stored as uint8 until this point."""
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        return torch.tanh(self.represent_head(self.torso(x)))

    def dynamics(self, hidden: torch.Tensor, action: torch.Tensor):
        """hidden [B, H], action [B] (int) -> next hidden [B, H], reward logits [B, S].
        Head outputs are float32 even under bf16 autocast, so all loss math runs in float32."""
        x = self._dynamics_trunk(
            hidden, nn.functional.one_hot(action.long(), self.spec.num_actions)
        )
        return torch.tanh(self.dynamics_state(x)), self.dynamics_reward(x).float()

    def _dynamics_trunk(self, hidden: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """The MLP of g over [hidden, one_hot(action)], before its state and reward heads."""
        return self.dynamics_net(torch.cat([hidden, one_hot.to(hidden.dtype)], -1))

    def unroll_dynamics(
        self, hidden: torch.Tensor, actions: torch.Tensor, hidden_grad_scale: float = 0.5
    ):
        """K steps of g from hidden [N, H] along actions [K, N]:
          hidden_k = g_state(scale_gradient(hidden_{k-1}, s), a_{k-1}),  k = 1..K
        -> hidden states [K, N, H] and reward logits [K, N, S]. The recursion needs one trunk
        call per step; the reward head runs once over all K steps."""
        K, N = actions.shape
        if K == 0:
            return hidden.new_zeros((0, N, hidden.shape[-1])), hidden.new_zeros(
                (0, N, self.num_bins)
            ).float()
        one_hots = nn.functional.one_hot(actions.long(), self.spec.num_actions)  # [K, N, A]
        states, trunks = [], []
        for k in range(K):
            x = self._dynamics_trunk(scale_gradient(hidden, hidden_grad_scale), one_hots[k])
            hidden = torch.tanh(self.dynamics_state(x))
            states.append(hidden)
            trunks.append(x)
        return torch.stack(states), self.dynamics_reward(torch.stack(trunks)).float()

    def predict(self, hidden: torch.Tensor):
        """hidden [B, H] -> policy logits [B, A], value logits [B, S] (float32, as in dynamics)."""
        x = self.prediction_net(hidden)
        return self.policy_head(x).float(), self.value_head(x).float()

    # -- helpers ------------------------------------------------------------------------
    def to_scalar(self, logits: torch.Tensor) -> torch.Tensor:
        """Value or reward head output [..., S] -> raw scalar [...]."""
        if self.spec.support_size > 0:
            return vt.categorical_to_scalar(logits, self.spec.support_size)
        return logits[..., 0]

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """What actors and the exported policy use: obs [B, *O] -> logits [B, A] (the value
        head is skipped: it is predict(represent(obs))[0] without the unused value)."""
        return self.policy_head(self.prediction_net(self.represent(obs))).float()

    def unroll(
        self, obs: torch.Tensor, actions: torch.Tensor, hidden_grad_scale: float = 0.5
    ) -> UnrollOutput:
        """Unroll the model K steps from obs [B, *O] along actions [K, B]: h, then g K times
        (unroll_dynamics), then f once over all K + 1 hidden states.

        The hidden state entering each dynamics step has its gradient scaled by
        `hidden_grad_scale` (0.5 in Muesli / MuZero; 1.0 disables it)."""
        if actions.dim() != 2 or actions.shape[1] != obs.shape[0]:
            raise ValueError(
                f"actions must be [K, B] with B={obs.shape[0]}, got {tuple(actions.shape)}"
            )
        hidden = self.represent(obs)
        states, reward_logits = self.unroll_dynamics(hidden, actions, hidden_grad_scale)
        K, B = actions.shape
        logits, values = self.predict(torch.cat([hidden[None], states]).reshape((K + 1) * B, -1))
        return UnrollOutput(
            logits.reshape(K + 1, B, -1), values.reshape(K + 1, B, -1), reward_logits
        )

    def dynamics_parameters(self):
        """Parameters of g (for the seed's 'scale dynamics parameter gradients' option)."""
        for module in (self.dynamics_net, self.dynamics_state, self.dynamics_reward):
            yield from module.parameters()


def build_network(spec: NetworkSpec, device: torch.device | None = None) -> MuesliNet:
    return MuesliNet(spec).to(device or "cpu")
