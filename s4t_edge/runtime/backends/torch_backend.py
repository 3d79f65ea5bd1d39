"""PyTorch backend: the artifact's partition executed as torch graphs (reference and debugging).

It rebuilds the model from the run directory the artifact was exported from and traces the same
partition the exporter traced (`s4t_edge.export.partition.build_partition`), so it computes what
the ONNX graphs hold -- with autograd's own kernels instead of ONNX Runtime's.  Comparing its θ
trajectory with the onnxruntime backend's checks the whole export chain.  torch is imported only
when this backend is constructed; nothing on a device needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError, BackendError
from s4t_edge.runtime.artifact import Artifact
from s4t_edge.runtime.backends.base import (
    Backend,
    Cut,
    StepResult,
    control_feeds,
    task_weight_feeds,
)


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError(
            "the torch/reference backends need PyTorch: pip install torch "
            "(on a device, use --backend onnxruntime or tensorrt instead)"
        ) from None
    return torch


def resolve_device(torch: Any, device: str | None) -> Any:
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BackendError("device 'cuda' requested but torch sees no CUDA GPU; use device='cpu'")
    return torch.device(device)


def source_run_dir(artifact: Artifact, source: str | Path | None) -> Path:
    """The run directory to rebuild the PyTorch model from: always the caller's `source`.

    The manifest records where the artifact was exported from, but a path written inside an
    artifact never decides what else is read (a copied or hostile artifact could point anywhere),
    so it only appears in the message.
    """
    if source is None or str(source) == "":
        recorded = artifact.manifest.get("source_run")
        hint = f" (the artifact was exported from {recorded!r})" if recorded else ""
        raise BackendError(
            f"the torch and reference backends rebuild the trained model: pass its run "
            f"directory with --source RUN_DIR (source=RUN_DIR in Python){hint}"
        )
    p = Path(source)
    if not p.is_dir():
        raise BackendError(
            f"source run directory {str(p)!r} does not exist here; pass the trained run with "
            "--source RUN_DIR"
        )
    return p


class TorchBackend(Backend):
    """Backbone / step / predict with the exporter's torch partition.

    Args:
        artifact: the loaded artifact (scope, batch, bn_stats and S4T settings come from it).
        source: run directory (default: manifest["source_run"]).
        device: "cpu", "cuda" or "auto".
        threads: torch intra-op threads (None: torch's default).
    """

    name = "torch"

    def __init__(
        self,
        artifact: Artifact,
        source: str | Path | None = None,
        device: str | None = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__(artifact, source=source, device=device, threads=threads)
        torch = import_torch()
        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(torch, device)
        from s4t_edge.export.partition import build_partition
        from s4t_edge.train.config import S4TConfig
        from s4t_edge.train.rundir import load_run

        run_dir = source_run_dir(artifact, source)
        model = load_run(run_dir).model.float()
        check_run_matches(artifact, model)
        m = artifact.manifest
        stages = list((m.get("export") or {}).get("add_adapters") or [])
        if stages:
            model.add_adapters(stages)
        s4t_cfg = S4TConfig.from_dict(artifact.s4t)
        theta = artifact.load_theta()
        self._adopt_theta(model, theta, stages)
        part = build_partition(
            model,
            str(m.get("scope")),
            artifact.batch,
            str(m.get("bn_stats", "batch")),
            s4t_cfg,
            objective=str(m.get("objective", "s4t")),
            task_weighting=artifact.task_weighting,
        )
        if list(part.theta_names) != list(artifact.theta_names):
            raise BackendError(
                f"the model rebuilt from {str(run_dir)!r} selects a different θ than the artifact "
                f"({len(part.theta_names)} vs {len(artifact.theta_names)} tensors); pass the run "
                "the artifact was exported from with --source"
            )
        if sorted(part.cut_names) != sorted(c.name for c in artifact.cut):
            raise BackendError(
                f"the partition rebuilt from {str(run_dir)!r} cuts the model elsewhere than the "
                "artifact; re-export it with this version of s4t-edge"
            )
        self.part = part.to(self.device)
        self.run_dir = run_dir

    @staticmethod
    def _adopt_theta(model: Any, theta: Mapping[str, np.ndarray], stages: list[str]) -> None:
        """Copy the artifact's θ into the model, so frozen and adaptable values both match."""
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in theta.items():
                if name in params:
                    params[name].copy_(torch.from_numpy(np.asarray(value)))
        if stages:
            lost = [n for n in params if n.startswith("adapters.") and n not in theta]
            if lost:
                raise BackendError(
                    "the artifact added adapters at export whose weights are outside θ "
                    f"({lost[0]}, ...), so they cannot be rebuilt from the run; use "
                    "--backend onnxruntime, or export with a scope that includes 'adapters'"
                )

    def _t(self, a: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def backbone(self, image: np.ndarray, bn_mix: float = 1.0) -> Cut:
        with self._torch.no_grad():
            control_feeds(self.artifact, bn_mix)  # the same range check as every backend
            cut = self.part.backbone(self._t(image), bn_mix)
        return Cut(dict(cut), batch=int(image.shape[0]))

    def step(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        mask_noise: np.ndarray,
        task_weights: np.ndarray | None = None,
    ) -> StepResult:
        weights = task_weight_feeds(self.artifact, task_weights)
        w = next((self._t(v) for v in weights.values()), None)
        th = {n: self._t(theta[n]) for n in self.part.theta_names}
        try:
            with self._torch.no_grad():
                loss, parts, grads = self.part.step(cut.tensors, th, self._t(mask_noise), w)
        except KeyError as e:
            raise BackendError(f"θ lacks tensor {e}; start from Session.source_theta()") from None
        return StepResult(
            loss=float(loss),
            task_losses={k: float(v) for k, v in parts.items()},
            grads={k: v.detach().cpu().numpy().astype(np.float32) for k, v in grads.items()},
        )

    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        th = {n: self._t(theta[n]) for n in self.part.predict_theta}
        with self._torch.no_grad():
            out = self.part.predict(cut.tensors, th)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "torch": self._torch.__version__,
            "threads": self._torch.get_num_threads(),
            "source_run": str(self.run_dir),
        }


def check_run_matches(artifact: Artifact, model: Any) -> None:
    """The rebuilt model must have the artifact's tasks (by name) and input size."""
    names = [t for t, _ in model.config.tasks]
    if sorted(names) != sorted(artifact.task_names):
        raise ArtifactError(
            f"the source run has tasks {names}, the artifact {list(artifact.task_names)}; "
            "pass the run the artifact was exported from with --source"
        )
    if tuple(model.config.input_size) != artifact.input_size:
        raise ArtifactError(
            f"the source run takes {tuple(model.config.input_size)} images, the artifact "
            f"{artifact.input_size}; pass the run the artifact was exported from with --source"
        )
