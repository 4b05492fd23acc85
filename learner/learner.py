"""The learner: samples batches from replay, applies the Muesli loss, keeps the EMA target
network and publishes the weights actors act with.

Plain class: build it directly (tests, --in-process) or wrap it with ray.remote. All
maths is in common/losses.py; this file is optimisation and bookkeeping.
"""

import copy
import io
import math
import time

import numpy as np
import torch

from common import envs as envs_lib
from common.cmpo import NormalizerState
from common.config import Config
from common.losses import LossState, init_loss_state, metrics_to_floats, muesli_loss_tensors
from common.networks import build_network
from common.ray_metrics import Recorder
from common.sequence import SequenceSpec
from learner import compiled as compiled_lib
from learner.batch import to_time_major
from learner.checkpoint import CheckpointError
from learner.checkpoint import contents as checkpoint_contents
from transport.seams import Batches, WeightSink


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device='cuda' was asked for but torch sees no CUDA device; allowed here: 'auto', 'cpu'"
        )
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether the learner runs its forward passes under bf16 autocast: 'auto' picks it on a
    CUDA device with bf16 support (Ampere and newer), fp32 elsewhere. Heads return float32,
    so only the torso and MLP matmuls run in bf16; bf16 needs no gradient scaling."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def with_eager_fallback(compiled, eager, what: str = "torch.compile"):
    """compiled(*args), falling back to eager(*args) for good (with a one-line note) when it
    raises for a reason of its own. When the compiled call raises, eager runs on the same
    arguments: if that raises too, the error is the data's and surfaces as eager's own with
    the compiled function kept; only if eager succeeds was it the compiler, and eager is used
    from then on."""

    def call(*args):
        nonlocal compiled
        if compiled is None:
            return eager(*args)
        try:
            return compiled(*args)
        except Exception as exc:  # told apart by the eager call below
            failure = exc
        # outside the except: eager's own error is not chained
        result = eager(*args)
        first_line = (str(failure).strip().splitlines() or [""])[0][:200]
        print(
            f"learner: {what} failed ({type(failure).__name__}: {first_line}); running the loss eagerly"
        )
        compiled = None
        return result

    return call


def compile_or_eager(fn):
    """torch.compile(fn) with with_eager_fallback, e.g. on a machine without a C++ compiler."""
    return with_eager_fallback(torch.compile(fn, dynamic=False), fn)


def random_start_mask(
    mask: torch.Tensor, per_sequence: int, generator: torch.Generator
) -> torch.Tensor:
    """Pick `per_sequence` valid start states per column of mask [T, B] (all if fewer)."""
    scores = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    scores = torch.where(mask > 0, scores, torch.full_like(scores, -1.0))
    k = min(per_sequence, mask.shape[0])
    top = scores.topk(k, dim=0).indices
    chosen = torch.zeros_like(mask).scatter_(0, top, 1.0)
    return chosen * mask


def check_same_shapes(mine: dict, stored: dict, what: str) -> None:
    """Raise a one-line ValueError when a stored state dict does not fit this network."""
    if mine.keys() != stored.keys():
        diff = sorted(set(mine) ^ set(stored))[:3]
        raise ValueError(
            f"checkpoint {what} network has other parameters than this config builds ({diff} ...); "
            "allowed: a checkpoint of the same network config"
        )
    for key, value in mine.items():
        if tuple(stored[key].shape) != tuple(value.shape):
            raise ValueError(
                f"checkpoint {what} parameter {key} has shape {tuple(stored[key].shape)}, this config "
                f"builds {tuple(value.shape)}; allowed: a checkpoint of the same network config"
            )


def acting_network_name(cfg: Config) -> str:
    """Which network actors act with and the exported policy is: 'online' or 'target' (the
    key of its weights in a checkpoint)."""
    return "online" if cfg.actors_use_online else "target"


class Learner:
    def __init__(self, cfg: Config, spec: SequenceSpec, batches: Batches, publisher: WeightSink):
        """spec: the run's sequences (built once by the wiring from the env's description)."""
        self.cfg, self.batches, self.publisher = cfg, batches, publisher
        self.device = resolve_device(cfg.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.torch_threads)
        seed = envs_lib.derive_seed(cfg.seed, "learner")
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.online = build_network(cfg.network_spec(spec), self.device)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.params = cfg.loss_params()
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # fused: one kernel for the whole parameter update (about 5% of a CartPole update on one CPU thread)
        self.optimizer = opt_cls(
            self.online.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            fused=True,
        )
        self.loss_state = init_loss_state(self.device)
        self.sequence_spec = spec
        self.compiled = cfg.compile == "on" or (
            cfg.compile == "auto" and self.device.type == "cuda"
        )
        self.loss_fn = (
            compile_or_eager(muesli_loss_tensors) if self.compiled else muesli_loss_tensors
        )
        if self.compiled:
            print(
                "learner: torch.compile is on (--compile); the first update compiles the loss "
                "(Inductor caches it for later runs)"
            )
        self.cached_loss = (
            self._cached_loss() if cfg.compile == "auto" and not self.compiled else None
        )
        self.steps = 0
        self.skipped = 0
        self.blends = 0
        self.metrics = Recorder("learner")
        self.publish()

    def compiled_folder(self):
        """Where this config's compiled loss is cached (learner/compiled.py); None with the cache off."""
        return compiled_lib.folder_for(
            self.online.spec,
            self.params,
            self.cfg.sequence_length,
            self.cfg.batch_size,
            self.sequence_spec.obs_dtype,
            str(self.device),
            self.bf16,
        )

    def _cached_loss(self):
        """On CPU with --compile auto: this config's compiled loss loading from the cache (None
        when it is not there yet: launch.py builds it for later runs once this one has ended)."""
        folder = self.compiled_folder()
        if folder is None or not (folder / "loss.bin").exists():
            return None
        return compiled_lib.CachedLoss(folder)

    def loss_args(self, batch: dict) -> tuple:
        """The loss's arguments for a time-major batch: with --starts-per-sequence, the batch gets
        its random start mask."""
        if self.cfg.starts_per_sequence:
            batch = dict(
                batch,
                start_mask=random_start_mask(
                    batch["mask"], self.cfg.starts_per_sequence, self.generator
                ),
            )
        return self.online, self.target, batch, self.loss_state, self.params

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _swap_in_cached_loss(self) -> None:
        fn = self.cached_loss.take()
        if self.cached_loss.done():
            self.cached_loss_s, self.cached_loss = self.cached_loss.seconds, None
            if fn is not None:
                self.loss_fn, self.compiled = (
                    with_eager_fallback(fn, muesli_loss_tensors, "the compiled loss"),
                    True,
                )
                print(
                    f"learner: compiled loss loaded from the cache in {self.cached_loss_s:.1f} s; "
                    f"in use from update {self.steps}"
                )

    def __repr__(self) -> str:
        """Ray's dashboard shows an actor's repr as it was when the constructor returned, never
        again, so it names only what stays true (the step is in the metrics and the progress line)."""
        return f"Learner({self.device})"

    # -- weights ------------------------------------------------------------------------
    def acting_network(self) -> torch.nn.Module:
        return getattr(self, acting_network_name(self.cfg))

    def publish(self) -> None:
        self.publisher.publish(self.steps, self.acting_network())
        self.metrics.inc("publishes")

    @torch.no_grad()
    def _update_target(self) -> None:
        """target <- (1 - alpha) target + alpha online; plus the seed's periodic 50/50 blend
        every N learner steps."""
        online, target = list(self.online.parameters()), list(self.target.parameters())
        torch._foreach_lerp_(target, online, self.cfg.target_ema)
        every = self.cfg.target_blend_every_steps
        if every and self.steps % every == 0:
            self.blends += 1
            torch._foreach_lerp_(target, online, 0.5)

    # -- one update ---------------------------------------------------------------------
    def update(self, batch: dict, stats: bool = True) -> dict:
        """One optimiser step on a time-major batch (common/losses.py). A non-finite loss or
        gradient skips the step and leaves weights, optimiser and normaliser untouched.
        `stats=False` skips the stats/* metrics where that saves work (the eager loss)."""
        cfg = self.cfg
        if self.cached_loss is not None:
            self._swap_in_cached_loss()
        args = self.loss_args(batch)
        with self.autocast():
            # the compiled graph has one signature: stats included (fused, nearly free)
            if self.compiled:
                loss, metrics, new_state = self.loss_fn(*args)
            else:
                loss, metrics, new_state = muesli_loss_tensors(*args, stats=stats)
        metrics = metrics_to_floats(metrics)
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(metrics["loss/total"]):  # already on the host: no extra GPU sync
            return self._skip(metrics, "loss")
        loss.backward()
        if cfg.dynamics_grad == "params":
            for p in self.online.dynamics_parameters():
                if p.grad is not None:
                    p.grad.mul_(cfg.dynamics_grad_scale)
        if cfg.grad_clip_value:
            torch.nn.utils.clip_grad_value_(self.online.parameters(), cfg.grad_clip_value)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(
                self.online.parameters(), cfg.max_grad_norm or float("inf")
            )
        )
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(metrics, "gradient")
        if cfg.lr_decay_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate * max(0.0, 1.0 - self.steps / cfg.lr_decay_steps)
        self.optimizer.step()
        self.loss_state = new_state
        self.steps += 1
        self._update_target()
        if self.steps % cfg.publish_every == 0:
            self.publish()
        metrics["learner/grad_norm"] = grad_norm
        return metrics

    def _skip(self, metrics: dict, what: str) -> dict:
        self.skipped += 1
        if self.skipped == 1 or self.skipped % 100 == 0:
            print(
                f"learner: non-finite {what} at step {self.steps}; update skipped ({self.skipped} so far)"
            )
        metrics["learner/skipped_updates"] = self.skipped
        return metrics

    # -- the training loop --------------------------------------------------------------
    def train(self, max_steps: int, wait_s: float = 0.0) -> dict:
        """Run up to max_steps updates on the batch stream's batches; while replay holds batches
        back (too little data, or its rate limit: the actors are behind), wait up to wait_s
        seconds in total, then return. Returns averaged metrics and counters."""
        start = time.perf_counter()
        deadline = start + wait_s
        sums, counts, count, batch_wait, lags = {}, {}, 0, 0.0, []
        self.batches.refresh_totals()
        while count < max_steps:
            t = time.perf_counter()
            arrays = self.batches.next(deadline)
            waited = time.perf_counter() - t
            batch_wait += waited
            self.metrics.observe("batch_wait_s", waited)
            if arrays is None:
                break
            valid = arrays["mask"]
            lags.append(self.steps - float(arrays["version"][valid].mean()))
            # stats/* of the first update of each call only: they are logged per call, not per update
            metrics = self.update(to_time_major(arrays, self.device), stats=count == 0)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            count += 1
        totals = self.batches.totals
        out = {key: value / counts[key] for key, value in sums.items()}
        out.update(
            {
                "learner/steps": self.steps,
                "learner/updates_in_call": count,
                "learner/seconds": time.perf_counter() - start,
                "learner/batch_wait_s": batch_wait,
                "learner/policy_lag": float(np.mean(lags)) if lags else 0.0,
                "learner/skipped_updates": self.skipped,
                "replay/failed_calls": totals.get("failed_calls", 0),
                "replay/lost_sequences": totals.get("lost_stored", 0),
                "replay/rejected": totals.get("rejected", 0),
            }
        )
        self._record_metrics(out, count)
        return out

    def _record_metrics(self, out: dict, count: int) -> None:
        m = self.metrics
        m.inc("steps", count)
        if not count:
            return
        transitions = count * self.cfg.batch_size * self.cfg.sequence_length
        m.set("transitions_per_s", transitions / max(out["learner/seconds"], 1e-9))
        m.set("policy_lag", out["learner/policy_lag"])
        for key, value in out.items():
            if key.startswith("loss/"):
                m.set("loss", value, term=key[len("loss/") :])

    # -- checkpoints --------------------------------------------------------------------
    def checkpoint_bytes(self, run_state: dict | None = None) -> bytes:
        """Everything needed to resume, serialised with torch.save (loadable with weights_only=True).
        `run_state` is the driver's own bookkeeping (plain numbers), stored alongside."""
        state = {
            "run": dict(run_state or {}),
            "replay_totals": {k: int(v) for k, v in self.batches.refresh_totals().items()},
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss_state": {"adv": list(self.loss_state.adv), "pg": list(self.loss_state.pg)},
            "steps": self.steps,
            "skipped": self.skipped,
            "blends": self.blends,
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def load_checkpoint_bytes(self, data: bytes) -> dict:
        """Restore from checkpoint_bytes(); returns the stored run_state."""
        # Loaded to the CPU (RNG states must stay there); load_state_dict copies weights and
        # optimiser moments onto this learner's device.
        try:
            state = checkpoint_contents(data)
        except Exception as exc:  # whatever torch raises for damaged bytes
            raise CheckpointError(
                f"checkpoint data is corrupt or truncated ({type(exc).__name__})"
            ) from None
        for name, net in (("online", self.online), ("target", self.target)):
            # before anything is overwritten
            check_same_shapes(net.state_dict(), state[name], name)
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss_state = LossState(
            *(
                NormalizerState(*(t.to(self.device) for t in state["loss_state"][name]))
                for name in ("adv", "pg")
            )
        )
        self.steps, self.skipped, self.blends = state["steps"], state["skipped"], state["blends"]
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        self.batches.restore_totals(state.get("replay_totals", {}))
        self.batches.refresh_totals()
        self.publish()
        return state.get("run", {})
