"""The published S4T test-time protocol in PyTorch: the baseline every s4t-edge claim is measured
against.

Per adaptation batch (as the published code does it): start from the source weights, put the whole
model in train mode (BatchNorm uses batch statistics and updates its running statistics, momentum
0.1), and take K full forward + backward passes of the test-time loss, updating **all** parameters
with SGD (lr 2e-5, weight decay 1e-6, momentum 0 by default: the run's S4T optimizer settings).
Predictions then come from the adapted model in eval mode (adapted weights, updated running
statistics).  The published protocol adapts once, on the first test batch, and evaluates the whole
set that way (`Adapter(mode="published")` + `predict_adapted`); episodic mode reloads the source
weights before each batch.

This adapts the whole network, not θ, so it does not fit the backbone/step/predict interface; it
exposes `adapt_batch` instead, and `Adapter` dispatches to it.  The mask noise comes from the
Adapter, so a run is reproducible and comparable with the θ backends noise draw for noise draw.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import BackendError
from s4t_edge.runtime.artifact import Artifact
from s4t_edge.runtime.backends.torch_backend import (
    check_run_matches,
    import_torch,
    resolve_device,
    source_run_dir,
)
from s4t_edge.runtime.optim import OptimizerConfig
from s4t_edge.runtime.session import ArtifactViews

PREDICT_BN = ("running", "batch")


@dataclass
class ReferenceResult:
    """One batch of the published protocol."""

    predictions: dict[str, np.ndarray]
    loss_trace: list[float]
    task_loss_trace: list[dict[str, float]] = field(default_factory=list)
    guards: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


class ReferenceSession(ArtifactViews):
    """The published protocol behind the same `load(...)` entry point.

    Args:
        artifact: used for the static shapes, tasks and preprocessing only.
        source: run directory (default: manifest["source_run"]).
        device: "cpu", "cuda" or "auto".
        optimizer: test-time optimiser (default: the run's S4T optimizer, i.e. the published SGD).
        predict_bn: BatchNorm statistics of the predictions after adaptation: "running" (eval
            mode; running statistics updated during adaptation) or "batch".
        threads: torch intra-op threads.
    """

    name = "reference"
    is_protocol = True

    def __init__(
        self,
        artifact: Artifact,
        source: str | Path | None = None,
        device: str | None = "cpu",
        optimizer: OptimizerConfig | dict[str, Any] | None = None,
        predict_bn: str = "running",
        threads: int | None = None,
    ) -> None:
        if artifact.task_weighting != "published":
            raise BackendError(
                "the reference backend runs the published protocol (its loss is λ·Σ w_t^p·ℓ_t) and "
                f"cannot honour task_weighting {artifact.task_weighting!r}; use --backend "
                "onnxruntime or torch, or an artifact exported without --task-weighting"
            )
        torch = import_torch()
        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        if predict_bn not in PREDICT_BN:
            raise BackendError(f"predict_bn must be one of {', '.join(PREDICT_BN)}")
        from s4t_edge.train.losses import test_time_loss
        from s4t_edge.train.rundir import load_run

        self.artifact = artifact
        self.device = resolve_device(torch, device)
        self.run_dir = source_run_dir(artifact, source)
        run = load_run(self.run_dir)
        self.model = run.model.float().to(self.device)
        check_run_matches(artifact, self.model)
        self.model.set_bn_mode(None)  # standard PyTorch BatchNorm: train mode = batch stats
        self.s4t_cfg = run.s4t_config
        self._loss = test_time_loss
        self._source_state = copy.deepcopy(self.model.state_dict())
        self.predict_bn = predict_bn
        if optimizer is None:
            self.opt_cfg = OptimizerConfig.from_dict(self.s4t_cfg.optimizer.to_dict())
        elif isinstance(optimizer, OptimizerConfig):
            self.opt_cfg = optimizer
        else:
            self.opt_cfg = OptimizerConfig.from_dict(optimizer)
        self._opt: Any = None
        self.reset()

    # --------------------------------------------------------------- session-like helpers
    # batch, input_size, tasks, preprocess and mask_noise come from ArtifactViews.

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "torch": self._torch.__version__,
            "source_run": str(self.run_dir),
            "optimizer": self.opt_cfg.to_dict(),
            "predict_bn": self.predict_bn,
            "params": int(sum(p.numel() for p in self.model.parameters())),
        }

    def close(self) -> None:
        return None

    # --------------------------------------------------------------- protocol
    def set_optimizer(self, cfg: OptimizerConfig) -> None:
        """Use `cfg` for the next episodes (the Adapter passes its optimiser settings here)."""
        self.opt_cfg = cfg
        self._opt = self._make_opt()

    def _make_opt(self) -> Any:
        c, params = self.opt_cfg, self.model.parameters()
        if c.name == "sgd":
            return self._torch.optim.SGD(
                params,
                lr=c.lr,
                momentum=c.momentum,
                dampening=c.dampening,
                weight_decay=c.weight_decay,
                nesterov=c.nesterov,
            )
        return self._torch.optim.Adam(
            params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay
        )

    def reset(self) -> None:
        """Source weights (and running statistics) back, fresh optimiser: an episode starts."""
        self.model.load_state_dict(self._source_state)
        self._opt = self._make_opt()

    def _tensor(self, x: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def _predict(self, x: Any) -> dict[str, np.ndarray]:
        self.model.eval()
        if self.predict_bn == "batch":  # batch statistics without moving the running ones
            self.model.set_bn_mode("batch")
        try:
            with self._torch.no_grad():
                out = self.model.predict(x)
        finally:
            self.model.set_bn_mode(None)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    def predict_adapted(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions of the current (adapted) weights and running statistics, in eval mode --
        how the published protocol evaluates the target set after adapting on its first batch."""
        return self._predict(self._tensor(image))

    def predict_source(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions of the source model (eval mode), leaving the current weights untouched."""
        current = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self._source_state)
        try:
            self.model.eval()
            with self._torch.no_grad():
                out = self.model.predict(self._tensor(image))
        finally:
            self.model.load_state_dict(current)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    def adapt_batch(
        self,
        image: np.ndarray,
        noises: Sequence[np.ndarray],
        loss_guard: float | None = 10.0,
    ) -> ReferenceResult:
        """K published test-time steps on preprocessed `image` (one noise array per step).

        The caller decides about resets (`reset()`); non-finite losses skip the update, a loss
        above `loss_guard` × the first resets to the source weights, as in the θ loop.
        """
        torch = self._torch
        x = self._tensor(image)
        guards = {"nonfinite_loss": 0, "nonfinite_grad": 0, "loss_runaway": 0}
        trace: list[float] = []
        task_trace: list[dict[str, float]] = []
        first: float | None = None
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        self.model.train()
        try:
            for noise in noises:
                self._opt.zero_grad(set_to_none=True)
                out = self.model(x, self._tensor(noise))
                total, parts = self._loss(out["main"], out["joint"], self.s4t_cfg)
                loss = float(total.detach())
                trace.append(loss)
                task_trace.append({k: float(v.detach()) for k, v in parts.items()})
                if not math.isfinite(loss):
                    guards["nonfinite_loss"] += 1
                    continue
                if first is None:
                    first = loss
                elif loss_guard and first > 0 and loss > loss_guard * first:
                    guards["loss_runaway"] += 1
                    self.reset()
                    self.model.train()
                    continue
                total.backward()
                grads_ok = all(
                    bool(torch.isfinite(p.grad).all())
                    for p in self.model.parameters()
                    if p.grad is not None
                )
                if not grads_ok:
                    guards["nonfinite_grad"] += 1
                    continue
                self._opt.step()
        finally:
            self.model.eval()
        sync()
        steps_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        preds = self._predict(x)
        sync()
        predict_ms = (time.perf_counter() - t0) * 1e3
        k = max(len(noises), 1)
        return ReferenceResult(
            predictions=preds,
            loss_trace=trace,
            task_loss_trace=task_trace,
            guards=guards,
            timing={
                "steps_ms": steps_ms,
                "step_ms": steps_ms / k,
                "predict_ms": predict_ms,
                "episode_ms": steps_ms + predict_ms,
            },
        )
