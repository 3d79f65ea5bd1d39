"""The S4T adaptation loop on θ: K steps per batch, guarded, episodic, online or published.

Per batch: preprocess -> backbone once (the cut is reused by every step) -> K × (draw mask noise
from the seeded generator, step, optimiser update) -> predict with the adapted θ.  Episodic mode
resets θ and the optimiser for every batch; online mode carries them, optionally resetting every
N batches.  Published mode is the published evaluation protocol: adapt once, on the first batch
of the stream (K steps from the source; a skipped batch does not count), then predict every later
batch with the adapted θ and no further steps (until `reset()`).

Guards keep a long-running device loop alive: a batch with non-finite pixels is skipped; a step
whose loss or gradient is non-finite is rejected (θ and optimiser state as before it); an update
that makes θ non-finite is undone; a loss above `loss_guard` × the batch's first loss resets θ to
the source.  Every firing is counted, per batch (`AdaptResult.guards`) and in total
(`Adapter.guards`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from s4t_edge.errors import BackendError, ConfigError
from s4t_edge.runtime.backends.base import to_numpy
from s4t_edge.runtime.manifest_check import LIMITS
from s4t_edge.runtime.optim import Optimizer, OptimizerConfig, make_optimizer
from s4t_edge.runtime.policy import (
    SHIFT_STAT,
    AdaptPolicy,
    prediction_change,
    semseg_entropy,
)

log = logging.getLogger(__name__)

MODES = ("episodic", "online", "published")
GUARDS = (
    "nonfinite_input",
    "nonfinite_loss",
    "nonfinite_grad",
    "nonfinite_theta",
    "loss_runaway",
    "drift_reset",
    "safety_rollback",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AdaptConfig:
    """How the loop adapts (the CLI builds one; `Adapter` consumes it)."""

    steps: int | None = None  # K steps per batch; None: the manifest's s4t.steps
    mode: str = "episodic"  # "episodic" (reset per batch) | "online" | "published" (adapt once)
    reset_every: int | None = None  # online: reset θ to the source every N batches
    seed: int = 0  # seed of the mask-noise generator (np.random.default_rng)
    loss_guard: float | None = 10.0  # reset to source θ when loss > this × first loss; None: off
    predict_before: bool = False  # also predict with the source θ (for before/after reports)
    max_drift: float | None = None  # reset to source θ when ||θ - θ_src|| / ||θ_src|| exceeds it

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.steps is not None and not (
            _is_int(self.steps) and 0 <= self.steps <= LIMITS.max_steps
        ):
            raise ConfigError(
                f"steps must be an integer from 0 to {LIMITS.max_steps:,}, got {self.steps!r}"
            )
        if self.reset_every is not None and not (
            _is_int(self.reset_every) and self.reset_every >= 1
        ):
            raise ConfigError(f"reset_every must be >= 1 batches, got {self.reset_every!r}")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**63):
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.loss_guard is not None and not (
            isinstance(self.loss_guard, (int, float)) and self.loss_guard > 1
        ):
            raise ConfigError(
                f"loss_guard must be > 1 (a multiple of the first loss), got {self.loss_guard!r}"
            )
        if self.max_drift is not None and not (
            isinstance(self.max_drift, (int, float)) and 0 < self.max_drift < math.inf
        ):
            raise ConfigError(
                f"max_drift must be a finite number > 0 (relative distance from the source θ), "
                f"got {self.max_drift!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdaptConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class AdaptResult:
    """What one `Adapter.adapt` call produced.

    Predictions are raw outputs (N, C_t, H, W) for the `n` images passed in (padding dropped);
    `None` when the batch was skipped.  `loss_trace[k]` is the loss of step k (NaN when rejected).
    """

    predictions: dict[str, np.ndarray] | None
    loss_trace: list[float]
    task_loss_trace: list[dict[str, float]] = field(default_factory=list)
    guards: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    predictions_before: dict[str, np.ndarray] | None = None
    n: int = 0
    skipped: bool = False
    message: str | None = None
    # predictions after step k for each k asked for with `adapt(..., predict_at=...)` (0: before)
    predictions_at: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    bn_mix: float | None = None  # BatchNorm statistics mix the batch used ('mix' artifacts)
    # first-step weighting: the c_t = 1 / part_t at the start that weighed this batch's steps
    task_weights: dict[str, float] | None = None
    bn_shift: float | None = None  # the statistics shift the "shift" score read, if it ran
    change: float | None = None  # prediction change the agreement rule measured


def _finite(x: float) -> bool:
    return math.isfinite(x)


class NoiseStream:
    """K mask-noise arrays drawn one at a time as a loop consumes them, in the same order (so the
    same values) as drawing all K first; `len` is K.  Holding one array at a time is what keeps
    an adapter's memory independent of K."""

    def __init__(self, session: Any, rng: np.random.Generator, k: int) -> None:
        self._session, self._rng, self._k = session, rng, int(k)

    def __len__(self) -> int:
        return self._k

    def __iter__(self) -> Any:
        for _ in range(self._k):
            yield self._session.mask_noise(self._rng)


class Adapter:
    """Adapts θ on batches of frames through a `Session` (or runs the reference protocol).

    Args:
        session: from `s4t_edge.runtime.load` (any backend, including "reference").
        steps: K gradient steps per batch (default: the manifest's s4t.steps).
        mode: "episodic" | "online" | "published" (K steps on the first batch only; every later
            batch is predicted with the adapted θ, as the published protocol evaluates).
        reset_every: online mode only: back to the source θ every N batches.
        optimizer: None (the manifest's s4t.optimizer), "sgd"/"adam" (manifest values for the
            shared fields, that optimiser's defaults otherwise), a dict, an `OptimizerConfig`
            or an `Optimizer`.
        seed: mask-noise generator seed.
        loss_guard: runaway factor (None disables).
        predict_before: also return predictions with the source θ.
        lr: overrides the optimiser's learning rate.
        max_drift: drift guard: when the relative distance of θ from the source,
            ||θ - θ_src|| / ||θ_src|| over all tensors, exceeds it after a batch's steps, θ and
            the optimiser go back to the source (counted as `drift_reset`).  None: off.
        policy: BatchNorm statistics and safety-net rules (`s4t_edge.runtime.policy`); None:
            the manifest's ``policy``, else the defaults (batch statistics, no safety net).
    """

    def __init__(
        self,
        session: Any,
        steps: int | None = None,
        mode: str = "episodic",
        reset_every: int | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | str | Optimizer | None = None,
        seed: int = 0,
        loss_guard: float | None = 10.0,
        predict_before: bool = False,
        lr: float | None = None,
        max_drift: float | None = None,
        policy: AdaptPolicy | Mapping[str, Any] | None = None,
    ) -> None:
        if not hasattr(session, "artifact") or not hasattr(session, "preprocess"):
            raise ConfigError(
                f"Adapter needs a session from s4t_edge.runtime.load(...), got "
                f"{type(session).__name__}"
            )
        self.session = session
        art = session.artifact
        manifest_steps = art.s4t.get("steps")
        self.config = AdaptConfig(
            steps=steps
            if steps is not None
            else (manifest_steps if manifest_steps is not None else 10),
            mode=mode,
            reset_every=reset_every,
            seed=seed,
            loss_guard=loss_guard,
            predict_before=predict_before,
            max_drift=max_drift,
        )
        self.optimizer = make_optimizer(self._optimizer_spec(art, optimizer, lr))
        if policy is None:
            policy = art.manifest.get("policy")
        self.policy = policy if isinstance(policy, AdaptPolicy) else AdaptPolicy.from_dict(policy)
        self._kinds = {t.name: t.kind for t in art.tasks}
        self.last_bn_shift: float | None = None  # what the "shift" score read last
        self.protocol = bool(getattr(session, "is_protocol", False))
        self._rng = np.random.default_rng(seed)
        self.guards: dict[str, int] = dict.fromkeys(GUARDS, 0)
        self.batches = 0  # batches adapted (skipped ones not counted)
        self.total_steps = 0
        self.adapted = False  # published mode: the adaptation batch has been seen
        # first-step weighting: c_t, measured when θ starts afresh (reset), kept until the next
        self._weighted = art.task_weighting == "first-step"
        self.task_weights: np.ndarray | None = None
        self._weight_steps = 0  # step-graph calls spent measuring c_t in the current batch
        if self.protocol:
            session.set_optimizer(self.optimizer.config)
            self._source: dict[str, np.ndarray] = {}
            self.theta: dict[str, np.ndarray] = {}
        else:
            self._source = session.source_theta()
            self.theta = {k: v.copy() for k, v in self._source.items()}

    @classmethod
    def from_config(
        cls,
        session: Any,
        config: AdaptConfig,
        optimizer: OptimizerConfig | Mapping[str, Any] | str | Optimizer | None = None,
    ) -> Adapter:
        """An adapter from an `AdaptConfig` (e.g. stored next to a benchmark result)."""
        return cls(session, optimizer=optimizer, **config.to_dict())

    @staticmethod
    def _optimizer_spec(art: Any, optimizer: Any, lr: float | None) -> Any:
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                raise ConfigError("pass lr inside the Optimizer instance, not as lr=")
            return optimizer
        base = dict(art.s4t.get("optimizer") or {})
        if optimizer is None:
            cfg = OptimizerConfig.from_dict(base)
        elif isinstance(optimizer, str):
            name = optimizer.lower()
            same = str(base.get("name", "sgd")).lower() == name
            # the manifest's values apply to the optimiser it names; for another name keep
            # only the shared fields (lr, weight decay) so e.g. --optimizer adam is usable.
            keep = base if same else {k: base[k] for k in ("lr", "weight_decay") if k in base}
            cfg = OptimizerConfig.from_dict({**keep, "name": name})
        elif isinstance(optimizer, OptimizerConfig):
            cfg = optimizer
        else:
            cfg = OptimizerConfig.from_dict({**base, **dict(optimizer)})
        return cfg.replace(lr=lr)

    # ------------------------------------------------------------------ state
    @property
    def source_theta(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._source.items()}

    def drift(self) -> float:
        """Relative distance of θ from the source: ||θ - θ_src|| / ||θ_src|| over all tensors."""
        if not self._source:
            return 0.0
        num = sum(
            float(np.sum((self.theta[k].astype(np.float64) - v) ** 2))
            for k, v in self._source.items()
        )
        den = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in self._source.values())
        return math.sqrt(num) / max(math.sqrt(den), 1e-12)

    def reset(self) -> None:
        """θ back to the source and fresh optimiser state (what episodic mode does per batch)."""
        self.theta = {k: v.copy() for k, v in self._source.items()}
        self.optimizer.reset()
        self.adapted = False
        self.task_weights = None
        if self.protocol:
            self.session.reset()

    def save_theta(self, path: str | os.PathLike[str], include_optimizer: bool = False) -> str:
        """Atomically save the current θ (and optimiser state, to resume online adaptation).

        Returns:
            The content sha256 stored in the file.
        """
        if self.protocol:
            raise BackendError(
                "the reference backend adapts every model parameter, not θ; "
                "use the onnxruntime or torch backend to save adapted θ"
            )
        from s4t_edge.runtime.state import save_theta

        art = self.session.artifact
        return save_theta(
            path,
            self.theta,
            optimizer_state=self.optimizer.state_dict() if include_optimizer else None,
            metadata={
                "artifact_theta_sha256": art.manifest.get("files", {}).get(art.theta_file, ""),
                "scope": str(art.manifest.get("scope", "")),
                "batches": self.batches,
                "steps": self.total_steps,
                "mode": self.config.mode,
                "rng": self._rng.bit_generator.state,
            },
        )

    def load_theta(
        self, path: str | os.PathLike[str], as_source: bool = False, resume: bool = True
    ) -> None:
        """Load θ saved by `save_theta` (verified).

        Args:
            path: the θ file.
            as_source: make it the θ that episodic mode and guards reset to.
            resume: when the file holds optimiser state (`include_optimizer=True`), also restore
                it, the noise generator and the counters, so online adaptation continues exactly.
        """
        if self.protocol:
            raise BackendError("the reference backend has no θ to load; use onnxruntime or torch")
        from s4t_edge.runtime.state import load_theta

        theta, info = load_theta(path, self.session.artifact.theta_specs)
        self.theta = {k: np.array(v, dtype=np.float32, copy=True) for k, v in theta.items()}
        if as_source:
            self._source = {k: v.copy() for k, v in self.theta.items()}
        if resume and info["optimizer_state"] is not None:
            import json

            from s4t_edge.errors import ArtifactError

            meta = info["metadata"]
            saved = (self.optimizer.state_dict(), self._rng.bit_generator.state)
            try:
                self.optimizer.load_state_dict(info["optimizer_state"])
                if "rng" in meta:
                    self._rng.bit_generator.state = json.loads(meta["rng"])
                batches = int(json.loads(meta.get("batches", "0")))
                total_steps = int(json.loads(meta.get("steps", "0")))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                self.optimizer.load_state_dict(saved[0])
                self._rng.bit_generator.state = saved[1]
                raise ArtifactError(
                    f"θ file {str(path)!r} carries optimiser or generator state this adapter "
                    f"cannot resume from ({type(e).__name__}: {e}); load it with resume=False"
                ) from None
            self.batches, self.total_steps = batches, total_steps

    # ------------------------------------------------------------------ batches
    def _prepare(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        x = self.session.preprocess(images)
        n, batch = x.shape[0], self.session.batch
        if n == 0:
            raise BackendError("empty batch: pass at least one image")
        if n > batch:
            raise BackendError(
                f"got {n} images but the artifact's static batch is {batch}; "
                f"pass at most {batch} images per call (split the stream)"
            )
        if n < batch:  # static shapes: repeat images, drop their predictions afterwards
            x = x[np.arange(batch) % n]
        return x, n

    def predict(
        self, images: np.ndarray, theta: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Predictions without adapting (current θ by default; pass `source_theta` for the
        source model).  The reference backend has no θ: `theta=None` predicts with its current
        (adapted) weights and statistics in eval mode, any `theta` with the source model."""
        x, n = self._prepare(images)
        if self.protocol:
            if theta is None:
                preds = self.session.predict_adapted(x)
            else:
                preds = self.session.predict_source(x)
        else:
            cut, _ = self._backbone(x, self.theta if theta is None else theta)
            preds = self.session.predict(cut, self.theta if theta is None else theta)
        return {k: v[:n] for k, v in preds.items()}

    def _backbone(self, x: np.ndarray, theta: Mapping[str, np.ndarray]) -> tuple[Any, float | None]:
        """The cut of a batch under the policy's BatchNorm statistics, and the α used.

        With candidates, each α gets a backbone pass and is scored without labels at `theta`;
        the lowest score wins.  The ``shift`` score instead reads the backbone's statistics
        shift at the smallest candidate and switches to the largest above the threshold.
        Artifacts without the ``bn_mix`` input ignore the policy.
        """
        s, pol = self.session, self.policy
        self.last_bn_shift = None
        if not s.artifact.controls:
            return s.backbone(x), None
        if not pol.candidates:
            return s.backbone(x, pol.bn_mix), pol.bn_mix
        if pol.score == "shift":
            return self._select_by_shift(x)
        best: tuple[float, float, Any] | None = None
        noise = seg = None
        if pol.score == "s4t":
            noise = s.mask_noise(np.random.default_rng(self.config.seed + 1))
        else:
            seg = next((t for t, k in self._kinds.items() if k == "semseg"), None)
            if seg is None:
                raise ConfigError("the entropy score needs a semseg task; use score 's4t'")
        for a in pol.candidates:
            cut = s.backbone(x, a)
            if noise is not None:
                score = s.step(cut, theta, noise).loss
            else:
                score = semseg_entropy(s.predict(cut, theta)[seg])
            if not math.isfinite(score):
                continue
            if best is None or score < best[0]:
                best = (score, a, cut)
        if best is None:  # every candidate non-finite: fall back to the fixed α
            return s.backbone(x, pol.bn_mix), pol.bn_mix
        return best[2], best[1]

    def _select_by_shift(self, x: np.ndarray) -> tuple[Any, float]:
        s, pol = self.session, self.policy
        if not any(t.name == SHIFT_STAT for t in s.artifact.stats):
            raise ConfigError(
                f"this artifact's backbone does not output {SHIFT_STAT} (exported before it "
                "existed, or with scope 'all'); re-export with --bn-stats mix, or use "
                "--stats-score entropy"
            )
        lo, hi = min(pol.candidates), max(pol.candidates)
        cut = s.backbone(x, lo)
        shift = float(to_numpy(cut.tensors[SHIFT_STAT]).reshape(-1)[0])
        self.last_bn_shift = shift
        if math.isfinite(shift) and shift > pol.shift_threshold and hi != lo:
            return s.backbone(x, hi), hi
        return cut, lo

    def adapt(
        self,
        images: np.ndarray,
        predict_before: bool | None = None,
        predict_at: tuple[int, ...] = (),
    ) -> AdaptResult:
        """Adapt on one batch (≤ the static batch; uint8 NHWC frames or float32 NCHW).

        Args:
            images: the frames.
            predict_before: also predict with the source θ (default: the adapter's setting);
                costs one predict pass, the cut is shared.
            predict_at: also predict after these step counts (0: before the first step), in
                `AdaptResult.predictions_at` -- for accuracy-against-steps curves; one predict
                pass each (host step loop only).

        Returns:
            An `AdaptResult`; `skipped=True` (and a message) when the batch had non-finite
            pixels -- θ is left as it was and the loop can go on with the next batch.
        """
        t_start = time.perf_counter()
        x, n = self._prepare(images)
        guards = dict.fromkeys(GUARDS, 0)
        if not np.isfinite(x).all():
            guards["nonfinite_input"] += 1
            self.guards["nonfinite_input"] += 1
            msg = (
                f"batch skipped: {int((~np.isfinite(x)).sum())} non-finite pixel values "
                "(NaN/Inf) in the input; θ unchanged -- check the camera/decoder"
            )
            log.warning(msg)
            return AdaptResult(None, [], guards=guards, n=n, skipped=True, message=msg)

        cfg = self.config
        before = cfg.predict_before if predict_before is None else bool(predict_before)
        if cfg.mode == "published" and self.adapted:
            # the published protocol adapts once; every later batch is only predicted
            result = self._predict_only(x, before)
            self.batches += 1
            return self._finish(result, n, t_start)
        if cfg.mode in ("episodic", "published") or (
            cfg.reset_every and self.batches % cfg.reset_every == 0
        ):
            self.reset()
        elif not self.protocol and not all(np.isfinite(v).all() for v in self.theta.values()):
            # θ set from outside (e.g. by hand) is never stepped from: every step would fail.
            guards["nonfinite_theta"] += 1
            log.warning("θ held non-finite values at the start of a batch: reset to the source")
            self.reset()
        # Drawn step by step, not all K up front: memory stays one noise array whatever K is.
        noises = NoiseStream(self.session, self._rng, cfg.steps)
        if self.protocol:
            result = self._adapt_protocol(x, noises, guards, before)
        else:
            result = self._adapt_theta(x, noises, guards, before, tuple(predict_at))
        for k, v in guards.items():
            self.guards[k] += v
        self.batches += 1
        self.total_steps += cfg.steps + self._weight_steps  # measuring c_t costs one step
        self._weight_steps = 0
        self.adapted = True
        return self._finish(result, n, t_start)

    @staticmethod
    def _finish(result: AdaptResult, n: int, t_start: float) -> AdaptResult:
        """Drop the predictions of padding images and stamp the total time."""
        result.n = n
        result.predictions = {k: v[:n] for k, v in (result.predictions or {}).items()}
        if result.predictions_before is not None:
            result.predictions_before = {k: v[:n] for k, v in result.predictions_before.items()}
        result.predictions_at = {
            k: {t: v[:n] for t, v in p.items()} for k, p in result.predictions_at.items()
        }
        result.timing["total_ms"] = (time.perf_counter() - t_start) * 1e3
        return result

    def _predict_only(self, x: np.ndarray, predict_before: bool) -> AdaptResult:
        """Published mode after the adaptation batch: current θ (weights), no step."""
        s = self.session
        timing: dict[str, float] = {}
        before = None
        if self.protocol:
            if predict_before:
                t0 = time.perf_counter()
                before = s.predict_source(x)
                timing["predict_before_ms"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            preds = s.predict_adapted(x)
            timing["predict_ms"] = (time.perf_counter() - t0) * 1e3
            timing["episode_ms"] = timing["predict_ms"]
        else:
            t0 = time.perf_counter()
            cut, _ = self._backbone(x, self.theta)
            timing["backbone_ms"] = (time.perf_counter() - t0) * 1e3
            if predict_before:
                t0 = time.perf_counter()
                before = s.predict(cut, self._source)
                timing["predict_before_ms"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            preds = s.predict(cut, self.theta)
            timing["predict_ms"] = (time.perf_counter() - t0) * 1e3
            timing["episode_ms"] = timing["backbone_ms"] + timing["predict_ms"]
        return AdaptResult(
            predictions=preds,
            loss_trace=[],
            guards=dict.fromkeys(GUARDS, 0),
            timing=timing,
            predictions_before=before,
        )

    def _adapt_theta(
        self,
        x: np.ndarray,
        noises: NoiseStream | list[np.ndarray],
        guards: dict[str, int],
        predict_before: bool,
        predict_at: tuple[int, ...] = (),
    ) -> AdaptResult:
        s, opt, pol = self.session, self.optimizer, self.policy
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        cut, alpha = self._backbone(x, self.theta)
        timing["backbone_ms"] = (time.perf_counter() - t0) * 1e3
        weights = None
        weight_ms = 0.0
        if self._weighted and self.config.steps > 0:
            if self.task_weights is None:
                t0 = time.perf_counter()
                self.task_weights = self._first_step_weights(cut)
                weight_ms = (time.perf_counter() - t0) * 1e3
                timing["task_weights_ms"] = weight_ms
                self._weight_steps = 1
            weights = self.task_weights
        start_theta = {k: v.copy() for k, v in self.theta.items()}
        start_opt = opt.state_dict()
        before = None
        if predict_before:
            t0 = time.perf_counter()
            before = s.predict(cut, self._source)
            timing["predict_before_ms"] = (time.perf_counter() - t0) * 1e3
        at: dict[int, dict[str, np.ndarray]] = {}
        start_preds = None
        if pol.safety == "agreement" or 0 in predict_at:
            start_preds = s.predict(cut, self.theta)
            if 0 in predict_at:
                at[0] = start_preds
        held_out: tuple[np.ndarray, float] | None = None  # (first mask draw, its loss)
        trace: list[float] = []
        task_trace: list[dict[str, float]] = []
        first: float | None = None
        step_ms = 0.0
        if getattr(s.backend, "supports_run_steps", False) and pol.safety != "holdout":
            # Device-resident fast path (TensorRT): θ, gradients and optimiser state stay on the
            # GPU for all K steps; only the loss scalars come back for the guards.
            t0 = time.perf_counter()
            self._run_steps_on_device(cut, noises, guards, trace, task_trace, weights)
            step_ms = (time.perf_counter() - t0) * 1e3
            noises = []
        for i, noise in enumerate(noises, 1):
            if (i - 1) in predict_at and (i - 1) not in at:
                at[i - 1] = s.predict(cut, self.theta)
            t0 = time.perf_counter()
            res = s.step(cut, self.theta, noise, weights)
            step_ms += (time.perf_counter() - t0) * 1e3
            trace.append(res.loss)
            task_trace.append(res.task_losses)
            if held_out is None and _finite(res.loss):
                held_out = (noise, res.loss)
            if not _finite(res.loss):
                guards["nonfinite_loss"] += 1
                continue
            if not all(np.isfinite(g).all() for g in res.grads.values()):
                guards["nonfinite_grad"] += 1
                continue
            if first is None:
                first = res.loss
            elif self.config.loss_guard and first > 0 and res.loss > self.config.loss_guard * first:
                guards["loss_runaway"] += 1
                log.warning(
                    "loss %.4g exceeds %.3g x the first loss %.4g: θ reset to the source",
                    res.loss,
                    self.config.loss_guard,
                    first,
                )
                self.theta = {k: v.copy() for k, v in self._source.items()}
                opt.reset()
                continue
            t0 = time.perf_counter()
            saved_theta = {k: v.copy() for k, v in self.theta.items()}
            saved_opt = opt.state_dict()
            with np.errstate(over="ignore", invalid="ignore"):  # the guard below handles it
                opt.step(self.theta, res.grads)
            if not all(np.isfinite(v).all() for v in self.theta.values()):
                guards["nonfinite_theta"] += 1
                self.theta = saved_theta
                opt.load_state_dict(saved_opt)
            step_ms += (time.perf_counter() - t0) * 1e3
        k = max(self.config.steps + self._weight_steps, 1)
        if self.config.steps in predict_at:
            at[self.config.steps] = s.predict(cut, self.theta)
        step_ms += weight_ms  # the measuring call is a step's worth of work
        timing["steps_ms"] = step_ms
        timing["step_ms"] = step_ms / k
        if self.config.max_drift is not None and self.drift() > self.config.max_drift:
            guards["drift_reset"] += 1
            log.warning(
                "θ drifted %.3g from the source (limit %.3g): θ reset to the source",
                self.drift(),
                self.config.max_drift,
            )
            self.theta = {k: v.copy() for k, v in self._source.items()}
            opt.reset()
        t0 = time.perf_counter()
        preds = s.predict(cut, self.theta)
        timing["predict_ms"] = (time.perf_counter() - t0) * 1e3
        change = None
        rollback = False
        if pol.safety == "agreement" and start_preds is not None:
            change = prediction_change(start_preds, preds, self._kinds)
            rollback = change > pol.max_change
        elif pol.safety == "holdout" and held_out is not None:
            t1 = time.perf_counter()
            after = s.step(cut, self.theta, held_out[0], weights).loss
            timing["safety_ms"] = (time.perf_counter() - t1) * 1e3
            rollback = not (_finite(after) and after < held_out[1])
        if rollback:
            # the steps of this batch did not pass the safety rule: keep the batch's start
            guards["safety_rollback"] += 1
            self.theta = start_theta
            opt.load_state_dict(start_opt)
            preds = start_preds if start_preds is not None else s.predict(cut, self.theta)
        timing["episode_ms"] = timing["backbone_ms"] + step_ms + timing["predict_ms"]
        return AdaptResult(
            predictions=preds,
            loss_trace=trace,
            task_loss_trace=task_trace,
            guards=guards,
            timing=timing,
            predictions_before=before,
            predictions_at=at,
            bn_mix=alpha,
            bn_shift=self.last_bn_shift,
            change=change,
            task_weights=None
            if weights is None
            else dict(zip(s.artifact.task_names, map(float, weights))),
        )

    def _run_steps_on_device(
        self,
        cut: Any,
        noises: NoiseStream | list[np.ndarray],
        guards: dict[str, int],
        trace: list[float],
        task_trace: list[dict[str, float]],
        task_weights: np.ndarray | None = None,
    ) -> None:
        """Same guard semantics as the host loop, decided per step from the scalars."""
        first: list[float] = []
        loss_guard = self.config.loss_guard

        def guard(rep: Any) -> str:
            if not rep.finite:
                guards["nonfinite_loss" if not _finite(rep.loss) else "nonfinite_grad"] += 1
                return "reject"
            if not first:
                first.append(rep.loss)
            elif loss_guard and first[0] > 0 and rep.loss > loss_guard * first[0]:
                guards["loss_runaway"] += 1
                return "reset"
            return "accept"

        res = self.session.backend.run_steps(
            cut,
            self.theta,
            noises,
            self.optimizer.config,
            self.optimizer.state_dict(),
            source_theta=self._source,
            guard=guard,
            **({} if task_weights is None else {"task_weights": task_weights}),
        )
        self.theta = {k: np.asarray(v) for k, v in res.theta.items()}
        self.optimizer.load_state_dict(res.state)
        trace.extend(res.losses)
        task_trace.extend(res.task_losses)

    def _first_step_weights(self, cut: Any) -> np.ndarray:
        """c_t = 1 / max(part_t, 1e-12) from one step at the batch's start θ, all weights 1.

        The call uses the noise the first real step will draw (the generator is rewound), so
        that step's loss is T, and its gradients are discarded.  A non-finite part gets weight 1:
        the steps' own guards then reject what it produces.
        """
        state = self._rng.bit_generator.state
        noise = self.session.mask_noise(self._rng)
        self._rng.bit_generator.state = state
        res = self.session.step(cut, self.theta, noise)
        parts = np.array([res.task_losses.get(t, np.nan) for t in self.session.artifact.task_names])
        with np.errstate(divide="ignore", invalid="ignore"):
            c = 1.0 / np.maximum(parts, 1e-12)
        return np.where(np.isfinite(parts), c, 1.0).astype(np.float32)

    def _adapt_protocol(
        self,
        x: np.ndarray,
        noises: NoiseStream | list[np.ndarray],
        guards: dict[str, int],
        predict_before: bool,
    ) -> AdaptResult:
        """The reference backend runs its own loop (all parameters, train-mode BatchNorm)."""
        before = None
        timing: dict[str, float] = {}
        if predict_before:
            t0 = time.perf_counter()
            before = self.session.predict_source(x)
            timing["predict_before_ms"] = (time.perf_counter() - t0) * 1e3
        out = self.session.adapt_batch(x, noises, loss_guard=self.config.loss_guard)
        for k, v in out.guards.items():
            guards[k] = guards.get(k, 0) + int(v)
        timing.update(out.timing)
        return AdaptResult(
            predictions=out.predictions,
            loss_trace=list(out.loss_trace),
            task_loss_trace=list(out.task_loss_trace),
            guards=guards,
            timing=timing,
            predictions_before=before,
        )

    def describe(self) -> dict[str, Any]:
        out = {
            **self.config.to_dict(),
            "optimizer": self.optimizer.config.to_dict(),
            "session": self.session.describe(),
        }
        if not self.protocol:  # which BatchNorm statistics the graphs use (steps and predictions)
            out["bn_stats"] = self.session.artifact.manifest.get("bn_stats")
            out["objective"] = self.session.artifact.manifest.get("objective", "s4t")
            out["task_weighting"] = self.session.artifact.task_weighting
            out["policy"] = self.policy.to_dict()
        return out
