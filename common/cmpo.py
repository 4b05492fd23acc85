"""Clipped MPO (CMPO) policy and regularisers, and the advantage normaliser (Muesli, Sec. 4).

Shape legend: `...` leading dims (e.g. [T, B]), A actions, N sampled actions.

  adv_norm(s, a) = (q(s, a) - v(s)) / sqrt(var_hat + eps),  var_hat = m / (1 - beta^n)
  pi_cmpo(a | s) ∝ pi_prior(a | s) exp(clip(adv_norm(s, a), -c, c))

m is an exponential moving average (decay beta) of the batch mean of squared
advantages and n the number of updates; the state (m, n) is explicit so a
checkpoint can carry it.
"""

from typing import NamedTuple

import torch


class NormalizerState(NamedTuple):
    """Running second moment of advantages: ema of mean(adv^2) and the update count."""

    second_moment: torch.Tensor  # scalar
    count: torch.Tensor  # scalar


def init_normalizer(device=None) -> NormalizerState:
    return NormalizerState(torch.zeros((), device=device), torch.zeros((), device=device))


def update_normalizer(
    state: NormalizerState, adv: torch.Tensor, beta: float, mask: torch.Tensor = None
) -> NormalizerState:
    """m <- beta m + (1 - beta) mean(adv^2); n <- n + 1. `mask` [...] selects the
    states (rows of adv [..., A] or entries of adv [...]) that count."""
    sq = adv.detach() ** 2
    if mask is not None:
        while mask.dim() < sq.dim():
            mask = mask.unsqueeze(-1)
        mask = mask.expand_as(sq).to(sq.dtype)
        mean_sq = (sq * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        mean_sq = sq.mean()
    return NormalizerState(beta * state.second_moment + (1.0 - beta) * mean_sq, state.count + 1)


def normalize(
    adv: torch.Tensor, state: NormalizerState, beta: float, eps: float = 1e-12
) -> torch.Tensor:
    """adv / sqrt(m / (1 - beta^n) + eps). Call after `update_normalizer` (n >= 1)."""
    correction = 1.0 - beta ** state.count.clamp(min=1.0)
    var = state.second_moment / correction
    return adv / torch.sqrt(var + eps)


def mix_prior(
    target_probs: torch.Tensor,
    behaviour_probs: torch.Tensor = None,
    behaviour_weight: float = 0.0,
    uniform_weight: float = 0.0,
) -> torch.Tensor:
    """pi_prior = (1 - w_mu - w_u) pi_target + w_mu mu + w_u / A   (probabilities [..., A])."""
    if behaviour_probs is None or behaviour_weight == 0.0:
        behaviour_probs, behaviour_weight = target_probs, 0.0
    num_actions = target_probs.shape[-1]
    return (
        (1.0 - behaviour_weight - uniform_weight) * target_probs
        + behaviour_weight * behaviour_probs
        + uniform_weight / num_actions
    )


def cmpo_log_probs(
    prior_log_probs: torch.Tensor, adv_norm: torch.Tensor, clip: float = 1.0
) -> torch.Tensor:
    """log pi_cmpo [..., A], normalised exactly over all A actions."""
    if prior_log_probs.shape != adv_norm.shape:
        raise ValueError(
            f"prior {tuple(prior_log_probs.shape)} and advantages {tuple(adv_norm.shape)} must match"
        )
    return torch.log_softmax(prior_log_probs + torch.clamp(adv_norm, -clip, clip), dim=-1)


def exact_kl(target_log_probs: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """KL(p || pi) = sum_a p(a) (log p(a) - log pi(a)) over the last dim -> [...].
    The gradient flows into log_pi only; p is treated as fixed. Terms with p(a) = 0
    are 0 (0 log 0 = 0), also when log pi(a) = -inf, and so is their gradient."""
    target_log_probs = target_log_probs.detach()
    p = target_log_probs.exp()
    terms = torch.where(
        p > 0, p * (target_log_probs - log_pi), torch.zeros((), dtype=p.dtype, device=p.device)
    )
    return terms.sum(-1)


def sampled_cmpo_regularizer(
    log_pi_of_samples: torch.Tensor, clipped_adv_of_samples: torch.Tensor
) -> torch.Tensor:
    """Sampled CMPO regulariser with b_1..b_N ~ pi_prior (Muesli eq. 9):

      w_i = exp(adv_i) / z_i,  z_i = (1 + sum_{j != i} exp(adv_j)) / N
      loss = -(1 / N) sum_i w_i log pi(b_i | s)

    log_pi_of_samples [..., N] = log pi(b_i | s) (carries the gradient),
    clipped_adv_of_samples [..., N] = clip(adv_norm(s, b_i), -c, c) (no gradient). Returns [...].
    """
    n = log_pi_of_samples.shape[-1]
    e = torch.exp(clipped_adv_of_samples.detach())
    z = (1.0 + e.sum(-1, keepdim=True) - e) / n
    weights = e / z
    return -(weights * log_pi_of_samples).sum(-1) / n
