"""The Muesli loss as it was before the batched rewrite (commit 9ff6b78 of common/losses.py and
MuesliNet.unroll): one call per quantity, the readable form. Kept as the oracle that
tests/test_loss_rewrite.py compares the batched common/losses.py against on random batches.
Not used by the project itself."""

import torch
import torch.nn.functional as F

from common import cmpo
from common import value_transforms as vt
from common.losses import LossParams, LossState, _masked_mean, _masked_sum, check_batch
from common.networks import UnrollOutput, scale_gradient
from common.retrace import retrace, retrace_state_values


def _head_loss(logits, target, support_size):
    """Cross-entropy against the built two_hot(h(target)) distribution; 0.5 squared error for scalar heads."""
    if support_size > 0:
        return -(vt.scalar_to_categorical(target, support_size) * F.log_softmax(logits, -1)).sum(-1)
    return 0.5 * (logits[..., 0] - target) ** 2


def unroll(net, obs, actions, hidden_grad_scale=0.5) -> UnrollOutput:
    """MuesliNet.unroll as it was: h, then K steps of g, with f after each."""
    hidden = net.represent(obs)
    logits, values = net.predict(hidden)
    all_logits, all_values, all_rewards = [logits], [values], []
    for k in range(actions.shape[0]):
        hidden, reward = net.dynamics(scale_gradient(hidden, hidden_grad_scale), actions[k])
        logits, values = net.predict(hidden)
        all_logits.append(logits)
        all_values.append(values)
        all_rewards.append(reward)
    reward_logits = (
        torch.stack(all_rewards)
        if all_rewards
        else torch.zeros(0, obs.shape[0], net.num_bins, device=obs.device)
    )
    return UnrollOutput(torch.stack(all_logits), torch.stack(all_values), reward_logits)


def _shift_windows(x: torch.Tensor, steps: int, fill=0) -> torch.Tensor:
    """x [L, B, ...] -> [steps, L, B, ...] with out[k, t] = x[t + k] (fill past the end)."""
    if steps == 0:  # torch.stack([]) raises; K = 0 is allowed by the config
        return x.new_zeros((0,) + tuple(x.shape))
    pad = torch.full((steps,) + tuple(x.shape[1:]), fill, dtype=x.dtype, device=x.device)
    ext = torch.cat([x, pad])
    return torch.stack([ext[k : k + x.shape[0]] for k in range(steps)])


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
    hidden = target.represent(flat_obs)  # [(T+1)B, H]
    prior_logits, value_logits = target.predict(hidden)
    value = target.to_scalar(value_logits).reshape(T + 1, B)
    # One-step lookahead for every action in one batched call: q = r_hat + gamma v(g(h, a)).
    hidden_a = hidden.repeat_interleave(A, 0)  # [(T+1)B A, H]
    actions_a = torch.arange(A, device=obs.device).repeat((T + 1) * B)
    next_hidden, reward_logits = target.dynamics(hidden_a, actions_a)
    next_value = target.to_scalar(target.predict(next_hidden)[1])
    q = (target.to_scalar(reward_logits) + p.discount * next_value).reshape(T + 1, B, A)

    behaviour_ext = torch.cat(
        [batch["behaviour"], torch.softmax(prior_logits, -1).reshape(T + 1, B, A)[-1:]]
    )
    prior_probs = cmpo.mix_prior(
        torch.softmax(prior_logits, -1).reshape(T + 1, B, A),
        behaviour_ext,
        p.prior_behaviour_weight,
        p.prior_uniform_weight,
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


def muesli_loss_tensors(online, target, batch: dict, state: "LossState", p: LossParams):
    """Total Muesli loss. Returns (loss scalar, metrics {name: 0-d tensor} on the batch's
    device, new LossState).

    Gradient reaches only `online`; targets are computed under no_grad with `target`."""
    check_batch(batch, online.spec.num_actions)
    # Batch entries are data: never let the gradient flow into them (reward/behaviour/mask enter the graph).
    batch = {k: v.detach() if torch.is_tensor(v) else v for k, v in batch.items()}
    tq, state = target_quantities(target, batch, state, p)
    obs, action, mask = batch["obs"], batch["action"], batch["mask"]
    T, B = action.shape
    K = p.unroll_steps
    # Only the chosen start states are unrolled: N of the T*B (flattened index t*B + b), N fixed
    # (p.max_starts, else all T*B) so shapes never depend on the data; `weight` [N] is 1 for a
    # chosen start state and 0 for a filler.
    start = (batch.get("start_mask", mask) * mask).reshape(T * B)
    if 0 < p.max_starts < T * B:
        # [N]: every 1 of start, then fillers
        idx = torch.topk(start, p.max_starts, sorted=False).indices
        weight = start[idx]
    else:
        idx, weight = None, start
    support = online.spec.support_size

    def pick(x):
        """[L, T, B, ...] -> [L, N, ...] at the chosen start states."""
        x = x.reshape(x.shape[0], T * B, *x.shape[3:])
        return x if idx is None else x[:, idx]

    # Unroll the online model from each start state s_t along a_t .. a_{t+K-1}.
    out = unroll(
        online, pick(obs[None, :T])[0], pick(_shift_windows(action, K)), p.hidden_grad_scale
    )
    log_pi = F.log_softmax(out.policy_logits, -1)  # [K+1, N, A]

    # The k = 0 terms (policy gradient, regulariser, value) on the start states, or, with
    # policy_terms_every_state and a subsample of starts, on every valid state (one more forward
    # pass of h and f over all T*B states; only the unroll is subsampled).
    every_state = p.policy_terms_every_state and (idx is not None or "start_mask" in batch)
    if every_state:
        logits0, value_logits0 = online.predict(
            online.represent(obs[:T].reshape(T * B, *obs.shape[2:]))
        )
        log_pi0, weight0 = F.log_softmax(logits0, -1), mask.reshape(T * B)  # [T*B, A], [T*B]

        def pick0(x):
            """[T, B, ...] -> [T*B, ...]: every state."""
            return x.reshape(T * B, *x.shape[2:])
    else:
        log_pi0, value_logits0, weight0 = log_pi[0], out.value_logits[0], weight

        def pick0(x):
            """[T, B, ...] -> [N, ...] at the chosen start states."""
            return pick(x[None])[0]

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

    # 3-5. Model losses for k = 1..K, masked past episode ends.
    # [K+1, N]: step t+k is real
    step_valid = pick(_shift_windows(mask, K + 1)) * weight
    # state s_{t+k} is real
    state_valid = pick(_shift_windows(tq["state_valid"], K + 1)[:, :T])
    cmpo_targets = pick(_shift_windows(tq["cmpo_log_probs"], K + 1)[:, :T])  # [K+1, N, A]
    value_targets = pick(_shift_windows(tq["value_targets"], K + 1))  # G_{t+k} or V_{t+k}
    if K > 0:
        rewards = pick(_shift_windows(batch["reward"], K))  # r_{t+k-1}, k = 1..K
        # A model step k >= 1 is valid when action a_{t+k-1} was really taken.
        acted = step_valid[:K]
        loss_model = _masked_mean(
            cmpo.exact_kl(cmpo_targets[1:], log_pi[1:]), acted * state_valid[1:]
        )
        loss_reward = _masked_mean(_head_loss(out.reward_logits, rewards, support), acted)
    else:
        loss_model = loss_reward = torch.zeros((), device=obs.device)
    # one mean over the k = 0 terms of every state and the k >= 1 terms of the starts
    if p.value_loss_weighting == "per-start":  # the paper's sum over k per start, / (K + 1)
        terms0 = _head_loss(value_logits0, pick0(tq["value_targets"]), support)
        per_start = torch.zeros_like(weight)
        for k in range(1, K + 1):
            per_start = per_start + step_valid[k] * _head_loss(
                out.value_logits[k], value_targets[k], support
            )
        loss_value = (
            _masked_mean(terms0, weight0) + per_start.sum() / weight.sum().clamp(min=1.0)
        ) / (K + 1)
    elif every_state:
        terms0 = _head_loss(value_logits0, pick0(tq["value_targets"]), support)
        terms = _head_loss(out.value_logits[1:], value_targets[1:], support)
        loss_value = (_masked_sum(terms0, weight0) + _masked_sum(terms, step_valid[1:])) / (
            weight0.sum() + step_valid[1:].sum()
        ).clamp(min=1.0)
    else:
        loss_value = _masked_mean(_head_loss(out.value_logits, value_targets, support), step_valid)

    loss = (
        p.pg_weight * loss_pg
        + p.reg_weight * loss_reg
        + p.value_weight * loss_value
        + p.reward_weight * loss_reward
        + p.model_weight * loss_model
    )

    with torch.no_grad():
        entropy = _masked_mean(-(log_pi0.exp() * log_pi0).sum(-1), weight0)
        pg_scale_state = state.adv if p.pg_normalizer == "shared" else state.pg
        metrics = {
            "loss/total": loss,
            "loss/pg": loss_pg,
            "loss/reg": loss_reg,
            "loss/model": loss_model,
            "loss/value": loss_value,
            "loss/reward": loss_reward,
            "stats/entropy": entropy,
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
    return loss, metrics, state
