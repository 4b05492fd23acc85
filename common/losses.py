"""The Muesli loss as one pure function of (online net, target net, batch, params).

Shape legend: T sequence length, B batch, K unroll steps, A actions, N sampled
actions, S support bins, O observation shape.

Batch (time-major tensors, made by `learner/batch.py` from replay's arrays):
  obs          [T+1, B, *O]  s_0 .. s_T; s_L is the final observation where an episode ends at step L-1
  action       [T, B]        a_t (int64)
  reward       [T, B]        r_t
  behaviour    [T, B, A]     mu(. | s_t), the acting policy's probabilities
  mask         [T, B]        1 where step t is real, 0 for padding after an episode end
  terminal     [T, B]        1 where step t reached a true terminal state (not a time limit)
  start_mask   [T, B]        (optional) which start states contribute; defaults to mask

Per start state s_t (Muesli, Hessel et al. 2021, section 4 and appendix):
  L_pg    = -clip(pi(a_t|s_t) / mu(a_t|s_t), 0, 1) * A_hat_t,  A_hat_t = (G_t - v(s_t)) / running std
  L_reg   = lambda_reg * KL(pi_cmpo(.|s_t) || pi(.|s_t))        (exact, or sampled with N draws)
  L_model = 1/K sum_k KL(pi_cmpo(.|s_{t+k}) || pi_hat_k(.|s_t, a_t..a_{t+k-1}))
  L_value = CE(two_hot(h(G_{t+k})), v_hat_k)  k = 0..K   (squared error for scalar heads)
            pooled: one mean over all terms; per-start: (1/(K+1)) [mean_k=0 + sum_{k>=1} / N_starts]
  L_reward= CE(two_hot(h(r_{t+k-1})), r_hat_k) k = 1..K
  total   = L_pg + L_reg + w_v L_value + w_r L_reward + w_m L_model
G is the Retrace (or, for the seed, trace-1 discounted) return computed with the target network.

Choices (LossParams; docs/fidelity.md has the paper's form of each and its measured effect):
  retrace_q          'v': Retrace with v(s) for E_pi q(s, .) and q(s, a_t); 'model': the target's
                     one-step q = r_hat + gamma v(g(h(s), a)), the paper's form (common/retrace.py)
  value_head_target  'return': the value head learns G_{t+k} (an estimate of q(s, a_taken));
                     'value': V_{t+k} = E_pi q + c (G - q), the state value Retrace bootstraps from
  pg_normalizer      'own': A_hat's running std is that of G - v; 'shared': that of the CMPO
                     advantages q - v (the paper's single normaliser)
  policy_terms_every_state
                     False: L_pg, L_reg and the k = 0 value term on the unrolled start states only;
                     True: on every valid state, while only the unroll uses the start subsample
lambda_reg is a loss weight, as in the paper's objective (rlax's CMPO utilities take their
`kl_weight` as a temperature inside pi_cmpo instead; the two agree at lambda_reg = 1).
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from common import cmpo
from common import value_transforms as vt
from common.retrace import retrace, retrace_state_values


@dataclass(frozen=True)
class LossParams:
    """The loss's settings. Built by common/config.Config.loss_params(), where each setting has
    its default and its description (the loss section of Config); the names are Config's."""

    discount: float
    unroll_steps: int  # K
    retrace_lambda: float
    value_target: str  # 'retrace' or 'mc' (all traces 1: the seed's returns)
    # 'v': v(s) for both q terms of Retrace; 'model': the target's one-step q
    retrace_q: str
    # 'return': G_t; 'value': V_t = v_t + c_t (G_t - q_t) (common/retrace.py)
    value_head_target: str
    # 'own': G - v has its own running scale; 'shared': the CMPO advantages' scale
    pg_normalizer: str
    # L_pg, L_reg and the k = 0 value loss on every valid state, not only the starts
    policy_terms_every_state: bool
    cmpo_clip: float  # c
    reg_weight: float  # lambda_reg
    reg_samples: int  # N; 0 = exact KL over all actions
    value_weight: float
    # 'pooled': one mean over every value term; 'per-start': the paper's sum over k = 0..K per
    # start state, averaged over starts and divided by K + 1 (each k weighs about 1 / (K + 1))
    value_loss_weighting: str
    reward_weight: float
    model_weight: float
    pg_weight: float
    adv_beta: float
    prior_behaviour_weight: float
    prior_uniform_weight: float
    # gradient scale of the state entering g (1.0 when the learner scales
    # the dynamics parameters' gradients instead)
    hidden_grad_scale: float
    # start states unrolled per batch, a fixed number (0 = all T*B); must be
    # at least the 1s in start_mask. Fixed shapes let torch.compile build once.
    max_starts: int = 0
    adv_eps: float = 1e-12  # epsilon of the advantage normaliser


class LossState(NamedTuple):
    """Running advantage scales carried between learner steps (checkpointed)."""

    adv: cmpo.NormalizerState  # one-step model advantages q - v (CMPO)
    pg: cmpo.NormalizerState  # return advantages G - v (policy gradient)


def init_loss_state(device=None) -> LossState:
    return LossState(cmpo.init_normalizer(device), cmpo.init_normalizer(device))


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask), with masked-out entries (padding, possibly inf or NaN) never read."""
    return torch.where(mask > 0, x * mask, 0.0).sum()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask) / max(sum(mask), 1)."""
    return _masked_sum(x, mask) / mask.sum().clamp(min=1.0)


PIECE_BYTES = 1 << 20  # activations of one piece of rows: half of a 2 MB per-core L2 cache


def _in_pieces(fn, width: int, parts):
    """fn over the rows of several inputs at once: `parts` is a list of tuples of fn's arguments,
    [rows, ...] each; returns fn's outputs for all of their rows, in order. The rows go in as few
    calls as keep each call's [rows, width] float32 activations within PIECE_BYTES: past that,
    each layer's activations leave the core's cache before the next layer reads them (MinAtar's
    7,680 rows of width 128: ~15% faster in pieces of 1,280; CartPole's ~2,000 rows of width 64
    stay one call)."""
    limit = max(1, PIECE_BYTES // (4 * width))
    groups, group, rows = [], [], 0
    for part in parts:
        n = part[0].shape[0]
        # the fewest slices of at most `limit` rows
        size = -(-n // -(-n // limit)) if n > limit else n
        for start in range(0, n, size):
            piece = tuple(x[start : start + size] for x in part)
            if group and rows + piece[0].shape[0] > limit:
                groups.append(group)
                group, rows = [], 0
            group.append(piece)
            rows += piece[0].shape[0]
    groups.append(group)
    outs = [fn(*(torch.cat(xs) if len(xs) > 1 else xs[0] for xs in zip(*g))) for g in groups]
    return tuple(torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*outs))


def _windows(x: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """x [L, B, ...] -> [K+1, N, ...] with out[k, n] = x[t + k, b] for the start state
    index[0, n] = t B + b (index[k] = index[0] + k B, from `window_index`); 0 past x's end.
    `rows` (fixed by T, K and B) is how many flat rows the padding makes, so no shape
    depends on the data."""
    flat = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    if rows > flat.shape[0]:
        flat = torch.cat([flat, flat.new_zeros((rows - flat.shape[0],) + tuple(flat.shape[1:]))])
    return flat[index]


def window_index(starts: torch.Tensor, steps: int, batch: int) -> torch.Tensor:
    """Flat indices t B + b of start states [N] -> those of s_{t+k}, k = 0..steps-1: [steps, N]."""
    return starts[None, :] + batch * torch.arange(steps, device=starts.device)[:, None]


def _head_loss(logits: torch.Tensor, target: torch.Tensor, support_size: int) -> torch.Tensor:
    """Cross-entropy against two_hot(h(target)) for categorical heads, 0.5 squared error for scalar."""
    if support_size > 0:
        return vt.two_hot_cross_entropy(logits, vt.h(target), support_size)
    return 0.5 * (logits[..., 0] - target) ** 2


def check_batch(batch: dict, num_actions: int) -> None:
    """Raise ValueError naming the field when a batch has the wrong rank or shape."""
    T, B = batch["action"].shape if batch["action"].dim() == 2 else (None, None)
    if T is None:
        raise ValueError(f"batch['action'] must be [T, B], got {tuple(batch['action'].shape)}")
    expected = {
        "reward": (T, B),
        "mask": (T, B),
        "terminal": (T, B),
        "behaviour": (T, B, num_actions),
    }
    for key, shape in expected.items():
        if tuple(batch[key].shape) != shape:
            raise ValueError(
                f"batch[{key!r}] must have shape {shape}, got {tuple(batch[key].shape)}"
            )
    if tuple(batch["obs"].shape[:2]) != (T + 1, B):
        raise ValueError(
            f"batch['obs'] must be [T+1={T + 1}, B={B}, ...], got {tuple(batch['obs'].shape)}"
        )


@torch.no_grad()
def target_quantities(target, batch: dict, state: "LossState", p: LossParams):
    """Everything computed with the target network (no gradient).

    Returns (dict of tensors, new LossState):
      value [T+1, B], prior_log_probs [T+1, B, A], adv_norm [T+1, B, A],
      cmpo_log_probs [T+1, B, A], returns G [T, B], value_targets [T, B], pg_adv [T, B],
      state_valid [T+1, B], q [T+1, B, A]."""
    obs, action, mask = batch["obs"], batch["action"], batch["mask"]
    T, B = action.shape
    A = batch["behaviour"].shape[-1]
    flat_obs = obs.reshape((T + 1) * B, *obs.shape[2:])
    n = (T + 1) * B
    hidden = target.represent(flat_obs)  # [n, H]
    # One-step lookahead for every action in one batched call: q = r_hat + gamma v(g(h, a)).
    actions_a = torch.arange(A, device=obs.device).repeat(n)
    width = target.spec.width
    next_hidden, reward_logits = _in_pieces(
        target.dynamics, width, [(hidden.repeat_interleave(A, 0), actions_a)]
    )
    # f once over s_j and every g(s_j, a), and one decoding of all value and reward heads.
    logits, value_logits = _in_pieces(target.predict, width, [(hidden,), (next_hidden,)])
    scalars = target.to_scalar(torch.cat([value_logits, reward_logits]))  # [n + n A + n A]
    value = scalars[:n].reshape(T + 1, B)
    next_value, reward_hat = scalars[n : n + n * A], scalars[n + n * A :]
    q = (reward_hat + p.discount * next_value).reshape(T + 1, B, A)

    target_probs = torch.softmax(logits[:n], -1).reshape(T + 1, B, A)
    behaviour_ext = torch.cat([batch["behaviour"], target_probs[-1:]])
    prior_probs = cmpo.mix_prior(
        target_probs, behaviour_ext, p.prior_behaviour_weight, p.prior_uniform_weight
    )
    prior_log_probs = torch.log(prior_probs.clamp(min=1e-12))

    # s_j is a real, non-terminal state for j < T where step j exists, and s_T when the
    # sequence did not end at T-1.
    last_open = mask[-1] * (1.0 - batch["terminal"][-1])
    state_valid = torch.cat([mask, last_open[None]])  # [T+1, B]

    adv = q - value[..., None]
    adv_state = cmpo.update_normalizer(state.adv, adv, p.adv_beta, state_valid)
    adv_norm = cmpo.normalize(adv, adv_state, p.adv_beta, p.adv_eps)
    cmpo_log_probs = cmpo.cmpo_log_probs(prior_log_probs, adv_norm, p.cmpo_clip)

    discount_t = p.discount * (1.0 - batch["terminal"])
    if p.value_target == "retrace":
        pi_a = prior_probs[:-1].gather(-1, action[..., None])[..., 0]
        mu_a = batch["behaviour"].gather(-1, action[..., None])[..., 0].clamp(min=1e-8)
        traces = p.retrace_lambda * torch.clamp(pi_a / mu_a, max=1.0) * mask
    elif p.value_target == "mc":
        traces = mask
    else:
        raise ValueError(f"unknown value_target {p.value_target!r}; allowed: 'retrace', 'mc'")
    # the paper's Retrace: E_prior q(s, .) and q(s, a_t) from the one-step model
    if p.retrace_q == "model":
        state_q = (prior_probs * q).sum(-1)  # [T+1, B]
        taken_q = q[:-1].gather(-1, action[..., None])[..., 0]  # [T, B]
    elif p.retrace_q == "v":
        state_q, taken_q = value, None
    else:
        raise ValueError(f"unknown retrace_q {p.retrace_q!r}; allowed: 'v', 'model'")
    returns = retrace(batch["reward"], discount_t, state_q, traces, taken_q)
    if p.value_head_target == "value":
        value_targets = retrace_state_values(state_q, traces, returns, taken_q)
    elif p.value_head_target == "return":
        value_targets = returns
    else:
        raise ValueError(
            f"unknown value_head_target {p.value_head_target!r}; allowed: 'return', 'value'"
        )
    pg_adv = returns - value[:-1]
    if p.pg_normalizer == "shared":  # the paper's one scale: that of the CMPO advantages q - v
        pg_state = state.pg
        pg_adv = cmpo.normalize(pg_adv, adv_state, p.adv_beta, p.adv_eps)
    elif p.pg_normalizer == "own":
        # Early in training the model's one-step advantages are tiny while G - v is not; a
        # scale of its own keeps the policy-gradient term from growing by that ratio.
        pg_state = cmpo.update_normalizer(state.pg, pg_adv, p.adv_beta, mask)
        pg_adv = cmpo.normalize(pg_adv, pg_state, p.adv_beta, p.adv_eps)
    else:
        raise ValueError(f"unknown pg_normalizer {p.pg_normalizer!r}; allowed: 'own', 'shared'")
    out = dict(
        value=value,
        prior_log_probs=prior_log_probs,
        adv_norm=adv_norm,
        cmpo_log_probs=cmpo_log_probs,
        returns=returns,
        value_targets=value_targets,
        pg_adv=pg_adv,
        state_valid=state_valid,
        q=q,
    )
    return out, LossState(adv_state, pg_state)


def metrics_to_floats(metrics: dict) -> dict:
    """{name: 0-d tensor} -> {name: float} in one device-to-host copy (one GPU sync, not one per number)."""
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def muesli_loss_tensors(
    online, target, batch: dict, state: "LossState", p: LossParams, stats: bool = True
):
    """Total Muesli loss. Returns (loss scalar, metrics {name: 0-d tensor} on the batch's
    device, new LossState): no host sync and no data-dependent shape, so torch.compile can
    capture it whole (metrics_to_floats turns the metrics into floats). `stats=False` leaves out
    the stats/* metrics (the loss/* terms are always there).

    Each network function runs once over everything it applies to: h over every state, g K
    times from the chosen start states, f once over those K + 1 sets of hidden states, one
    log-softmax, one cross-entropy for every value and reward head.
    Gradient reaches only `online`; targets are computed under no_grad with `target`."""
    check_batch(batch, online.spec.num_actions)
    # Batch entries are data: never let the gradient flow into them (reward/behaviour/mask enter the graph).
    batch = {k: v.detach() if torch.is_tensor(v) else v for k, v in batch.items()}
    tq, state = target_quantities(target, batch, state, p)
    obs, action, mask = batch["obs"], batch["action"], batch["mask"]
    T, B = action.shape
    K = p.unroll_steps
    support = online.spec.support_size
    # Only the chosen start states are unrolled: N of the T*B (flattened index t*B + b), N fixed
    # (p.max_starts, else all T*B) so shapes never depend on the data; `weight` [N] is 1 for a
    # chosen start state and 0 for a filler.
    start = (batch.get("start_mask", mask) * mask).reshape(T * B)
    subsampled = 0 < p.max_starts < T * B
    if subsampled:
        # [N]: every 1 of start, then fillers
        starts = torch.topk(start, p.max_starts, sorted=False).indices
        weight = start[starts]
    else:
        starts, weight = torch.arange(T * B, device=obs.device), start
    N = starts.shape[0]
    index = window_index(starts, K + 1, B)  # [K+1, N]: s_{t+k}

    def windows(x):
        """[T or T+1, B, ...] -> [K+1, N, ...]: x at t+k for each chosen start t."""
        return _windows(x, index, (T + K) * B)

    # The k = 0 terms (policy gradient, regulariser, value) are on the M = N start states, or,
    # with policy_terms_every_state and a subsample of starts, on every valid state (M = T*B;
    # only the unroll is subsampled). h runs over those M states; the unroll starts from them.
    every_state = p.policy_terms_every_state and (subsampled or "start_mask" in batch)
    flat_obs = obs[:T].reshape(T * B, *obs.shape[2:])
    if every_state or not subsampled:
        hidden0 = online.represent(flat_obs)  # [T*B, H]
        weight0 = mask.reshape(T * B) if every_state else weight
        hidden_starts = hidden0[starts] if subsampled else hidden0

        def pick0(x):
            """[T, B, ...] -> [T*B, ...]: every state."""
            return x.reshape(T * B, *x.shape[2:])
    else:
        hidden0 = hidden_starts = online.represent(flat_obs[starts])  # [N, H]
        weight0 = weight

        def pick0(x):
            """[T, B, ...] -> [N, ...] at the chosen start states."""
            return x.reshape(T * B, *x.shape[2:])[starts]

    M = hidden0.shape[0]

    # Unroll g from each start along a_t .. a_{t+K-1}, then f over all k = 0..K states at once.
    hidden_k, reward_logits = online.unroll_dynamics(
        hidden_starts, windows(action)[:K], p.hidden_grad_scale
    )
    policy_logits, value_logits = _in_pieces(
        online.predict, online.spec.width, [(hidden0,)] + [(h,) for h in hidden_k]
    )
    log_pi_all = F.log_softmax(policy_logits, -1)  # [M + K N, A]
    log_pi0, log_pi = log_pi_all[:M], log_pi_all[M:].reshape(K, N, log_pi_all.shape[-1])

    # 1. Policy gradient with clipped importance ratio; the ratio carries the gradient.
    a_t = pick0(action)  # [M]
    log_pi0_a = log_pi0.gather(-1, a_t[:, None])[:, 0]
    mu_a = pick0(batch["behaviour"]).gather(-1, a_t[:, None])[:, 0].clamp(min=1e-8)
    ratio = torch.clamp(log_pi0_a.exp() / mu_a, 0.0, 1.0)
    loss_pg = _masked_mean(-ratio * pick0(tq["pg_adv"]), weight0)

    # 2. CMPO regulariser at k = 0.
    if p.reg_samples > 0:
        prior = pick0(tq["prior_log_probs"][:T]).exp()  # [M, A]
        samples = torch.multinomial(prior, p.reg_samples, replacement=True)  # [M, N_samples]
        adv_s = torch.clamp(
            pick0(tq["adv_norm"][:T]).gather(-1, samples), -p.cmpo_clip, p.cmpo_clip
        )
        reg = cmpo.sampled_cmpo_regularizer(log_pi0.gather(-1, samples), adv_s)
    else:
        reg = cmpo.exact_kl(pick0(tq["cmpo_log_probs"][:T]), log_pi0)
    loss_reg = _masked_mean(reg, weight0)

    # 3. Model policy loss for k = 1..K, masked past episode ends: step t+k-1 was really taken
    # (acted) and s_{t+k} is a real state.
    # [K+1, N]: step t+k is real
    step_valid = windows(mask) * weight
    acted = step_valid[:K]
    loss_model = _masked_mean(
        cmpo.exact_kl(windows(tq["cmpo_log_probs"])[1:], log_pi),
        acted * windows(tq["state_valid"])[1:],
    )

    # 4-5. Value (k = 0 on the M states, k >= 1 on the starts: one mean over all of them) and
    # reward (r_{t+k-1}, k = 1..K): one cross-entropy over every head.
    value_targets = torch.cat(
        [pick0(tq["value_targets"]), windows(tq["value_targets"])[1:].reshape(K * N)]
    )
    value_weights = torch.cat([weight0, step_valid[1:].reshape(K * N)])
    head_terms = _head_loss(
        torch.cat([value_logits, reward_logits.reshape(K * N, reward_logits.shape[-1])]),
        torch.cat([value_targets, windows(batch["reward"])[:K].reshape(K * N)]),
        support,
    )
    if p.value_loss_weighting == "pooled":
        loss_value = _masked_mean(head_terms[: M + K * N], value_weights)
    elif p.value_loss_weighting == "per-start":
        # k = 0 as a mean over its M states, each k >= 1 summed per start and averaged over the
        # N starts, as the paper's per-start sum over k; / (K + 1) keeps the pooled scale
        unrolled = _masked_sum(head_terms[M : M + K * N], value_weights[M:])
        loss_value = (
            _masked_mean(head_terms[:M], weight0) + unrolled / weight.sum().clamp(min=1.0)
        ) / (K + 1)
    else:
        raise ValueError(
            f"unknown value_loss_weighting {p.value_loss_weighting!r}; allowed: 'pooled', 'per-start'"
        )
    loss_reward = _masked_mean(head_terms[M + K * N :], acted.reshape(K * N))

    loss = (
        p.pg_weight * loss_pg
        + p.reg_weight * loss_reg
        + p.value_weight * loss_value
        + p.reward_weight * loss_reward
        + p.model_weight * loss_model
    )
    metrics = {
        "loss/total": loss,
        "loss/pg": loss_pg,
        "loss/reg": loss_reg,
        "loss/model": loss_model,
        "loss/value": loss_value,
        "loss/reward": loss_reward,
    }
    if stats:
        with torch.no_grad():
            pg_scale_state = state.adv if p.pg_normalizer == "shared" else state.pg
            metrics.update(
                {
                    "stats/entropy": _masked_mean(-(log_pi0.exp() * log_pi0).sum(-1), weight0),
                    "stats/is_ratio_mean": _masked_mean(ratio, weight0),
                    "stats/adv_std": torch.sqrt(
                        state.adv.second_moment / (1 - p.adv_beta**state.adv.count)
                    ),
                    "stats/pg_adv_std": torch.sqrt(
                        pg_scale_state.second_moment / (1 - p.adv_beta**pg_scale_state.count)
                    ),
                    "stats/value_mean": _masked_mean(tq["value"][:T], mask),
                    "stats/return_mean": _masked_mean(tq["returns"], mask),
                    "stats/cmpo_prior_kl": _masked_mean(
                        cmpo.exact_kl(tq["cmpo_log_probs"][:T], tq["prior_log_probs"][:T]), mask
                    ),
                }
            )
    return loss, metrics, state
