"""ONNX Runtime backend: the three artifact graphs as `InferenceSession`s (CPU or CUDA EP).

On the CUDA execution provider the cut tensors stay on the GPU between the backbone and the K
steps (I/O binding keeps them as device `OrtValue`s), so a step copies only θ and the mask noise
in and the loss and gradients out -- the arrays the numpy optimiser needs.  On CPU, plain `run`
with numpy feeds is already zero-copy for inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError, BackendError
from s4t_edge.runtime.artifact import GRAPH_NAMES, Artifact
from s4t_edge.runtime.backends.base import (
    Backend,
    Cut,
    StepResult,
    control_feeds,
    task_weight_feeds,
)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed; install it with: pip install onnxruntime "
            "(CPU) or onnxruntime-gpu (CUDA; on Jetson use NVIDIA's wheel)"
        ) from None
    return onnxruntime


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0][:300] if msg else type(e).__name__


class OnnxRuntimeBackend(Backend):
    """Backbone / step / predict through ONNX Runtime.

    Args:
        artifact: the loaded artifact.
        providers: execution providers in priority order; default CUDA when onnxruntime-gpu
            sees a GPU, else CPU.  Names may be short ("cuda", "cpu").
        intra_op_threads / inter_op_threads: ORT thread pools (None: ORT's default).
        graph_optimization_level: "disable" | "basic" | "extended" | "all".
        io_binding: keep cut tensors on the device between calls; default on for CUDA.
        device_id: CUDA device ordinal.
    """

    name = "onnxruntime"

    def __init__(
        self,
        artifact: Artifact,
        providers: list[str] | tuple[str, ...] | str | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization_level: str = "all",
        io_binding: bool | None = None,
        device_id: int = 0,
    ) -> None:
        super().__init__(
            artifact,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            graph_optimization_level=graph_optimization_level,
            io_binding=io_binding,
            device_id=device_id,
        )
        ort = _import_ort()
        self._ort = ort
        self.providers = self._resolve_providers(ort, providers)
        self.device = "cuda" if self.providers[0] == _CUDA else "cpu"
        self.device_id = int(device_id)
        self.io_binding = (self.device == "cuda") if io_binding is None else bool(io_binding)
        if graph_optimization_level not in _OPT_LEVELS:
            raise BackendError(
                f"unknown graph_optimization_level {graph_optimization_level!r}; "
                f"choose one of {', '.join(_OPT_LEVELS)}"
            )
        so = ort.SessionOptions()
        so.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
        if intra_op_threads is not None:
            so.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            so.inter_op_num_threads = int(inter_op_threads)
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization_level]
        provider_args: list[Any] = [
            (p, {"device_id": self.device_id}) if p == _CUDA else p for p in self.providers
        ]
        self._sessions: dict[str, Any] = {}
        for g in GRAPH_NAMES:
            path = artifact.graph_path(g)
            try:
                sess = ort.InferenceSession(str(path), so, providers=provider_args)
            except Exception as e:  # ORT raises its own pybind exception types
                raise ArtifactError(
                    f"ONNX Runtime cannot load {str(path)!r}: {_one_line(e)}; "
                    "re-export the artifact or update onnxruntime"
                ) from None
            self._check_io(g, sess)
            self._sessions[g] = sess
        spec = artifact.graphs["step"]
        self._step_outputs = list(spec.output_names)
        self._step_feeds = list(spec.input_names)
        self._predict_feeds = list(artifact.graphs["predict"].input_names)
        self._cut_names = list(artifact.graphs["backbone"].output_names)
        self._noise_name = artifact.mask_noise.name

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _resolve_providers(ort: Any, providers: Any) -> list[str]:
        available = list(ort.get_available_providers())
        if providers is None:
            return [_CUDA, _CPU] if _CUDA in available else [_CPU]
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        short = {"cpu": _CPU, "cuda": _CUDA, "tensorrt": "TensorrtExecutionProvider"}
        resolved = [short.get(p.lower(), p) for p in providers]
        missing = [p for p in resolved if p not in available]
        if missing:
            raise BackendError(
                f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(available)}); "
                "install onnxruntime-gpu for CUDA, or use the CPU (--device cpu, providers=['cpu'])"
            )
        if _CPU not in resolved:
            resolved.append(_CPU)  # fallback for ops the first provider lacks
        return resolved

    def _check_io(self, graph: str, sess: Any) -> None:
        spec = self.artifact.graphs[graph]
        have_in = {i.name for i in sess.get_inputs()}
        have_out = {o.name for o in sess.get_outputs()}
        want_in, want_out = set(spec.input_names), set(spec.output_names)
        if have_in != want_in or not want_out <= have_out:
            diff = sorted((have_in ^ want_in) | (want_out - have_out))
            raise ArtifactError(
                f"{spec.file} does not match manifest.json (I/O names differ: {', '.join(diff[:4])}); "
                "re-export the artifact"
            )
        # Static shapes and dtypes too: the runtime allocates and feeds by the manifest.
        graph_io = {i.name: i for i in (*sess.get_inputs(), *sess.get_outputs())}
        for t in (*spec.inputs, *spec.outputs):
            io = graph_io.get(t.name)
            if io is None:
                continue
            shape = tuple(d if isinstance(d, int) else -1 for d in io.shape)
            dtype = _ORT_DTYPES.get(io.type)
            if shape != t.shape or (dtype is not None and dtype != t.dtype):
                raise ArtifactError(
                    f"{spec.file} does not match manifest.json: {t.name!r} is {list(shape)} "
                    f"{dtype} in the graph, {list(t.shape)} {t.dtype} in the manifest; "
                    "re-export the artifact"
                )

    # ------------------------------------------------------------------ calls
    def _run(self, graph: str, outputs: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
        try:
            return self._sessions[graph].run(outputs, feeds)
        except Exception as e:
            raise BackendError(
                f"ONNX Runtime failed running {graph}.onnx: {_one_line(e)}; "
                "check input shapes/dtypes against the manifest"
            ) from None

    def _run_bound(
        self,
        graph: str,
        feeds: Mapping[str, Any],
        outputs: list[str],
        keep_on_device: bool,
    ) -> list[Any]:
        """Run with I/O binding: OrtValue feeds are used where they live (no copy).

        With `keep_on_device`, outputs stay as OrtValues on the session's device (the cut, fed
        back into every step); otherwise they are copied to numpy.
        """
        sess = self._sessions[graph]
        binding = sess.io_binding()
        try:
            for name, v in feeds.items():
                if isinstance(v, np.ndarray):
                    binding.bind_cpu_input(name, np.ascontiguousarray(v))
                else:
                    binding.bind_ortvalue_input(name, v)
            for name in outputs:
                if keep_on_device and self.device == "cuda":
                    binding.bind_output(name, "cuda", self.device_id)
                else:
                    binding.bind_output(name)
            sess.run_with_iobinding(binding)
        except Exception as e:
            raise BackendError(
                f"ONNX Runtime failed running {graph}.onnx: {_one_line(e)}; "
                "check input shapes/dtypes against the manifest"
            ) from None
        if keep_on_device:
            return list(binding.get_outputs())
        return list(binding.copy_outputs_to_cpu())

    def backbone(self, image: np.ndarray, bn_mix: float = 1.0) -> Cut:
        feeds = {self.artifact.input.name: image}
        feeds.update(control_feeds(self.artifact, bn_mix))
        if self.io_binding:
            outs = self._run_bound("backbone", feeds, self._cut_names, keep_on_device=True)
        else:
            outs = self._run("backbone", self._cut_names, feeds)
        return Cut(dict(zip(self._cut_names, outs)), batch=int(image.shape[0]))

    def _feeds(
        self,
        names: list[str],
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        noise: np.ndarray | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        feeds: dict[str, Any] = {}
        for n in names:
            if n in cut.tensors:
                feeds[n] = cut.tensors[n]
            elif n in theta:
                feeds[n] = theta[n]
            elif n == self._noise_name and noise is not None:
                feeds[n] = noise
            elif extra and n in extra:
                feeds[n] = extra[n]
            else:
                raise BackendError(
                    f"no value for graph input {n!r}: θ must hold every tensor of the artifact "
                    "(start from Session.source_theta())"
                )
        return feeds

    def step(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        mask_noise: np.ndarray,
        task_weights: np.ndarray | None = None,
    ) -> StepResult:
        weights = task_weight_feeds(self.artifact, task_weights)
        feeds = self._feeds(self._step_feeds, cut, theta, mask_noise, weights)
        if self.io_binding:
            outs = self._run_bound("step", feeds, self._step_outputs, keep_on_device=False)
        else:
            outs = self._run("step", self._step_outputs, feeds)
        loss = float("nan")
        task_losses: dict[str, float] = {}
        grads: dict[str, np.ndarray] = {}
        for name, value in zip(self._step_outputs, outs):
            if name == "loss":
                loss = float(np.asarray(value).reshape(-1)[0])
            elif name.startswith("loss/"):
                task_losses[name[5:]] = float(np.asarray(value).reshape(-1)[0])
            elif name.startswith("grad/"):
                grads[name[5:]] = np.asarray(value, dtype=np.float32)
        return StepResult(loss=loss, task_losses=task_losses, grads=grads)

    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._feeds(self._predict_feeds, cut, theta)
        names = list(self.artifact.graphs["predict"].output_names)
        if self.io_binding:
            outs = self._run_bound("predict", feeds, names, keep_on_device=False)
        else:
            outs = self._run("predict", names, feeds)
        return {n[5:] if n.startswith("pred/") else n: np.asarray(v) for n, v in zip(names, outs)}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "providers": ",".join(self.providers),
            "device": self.device,
            "io_binding": self.io_binding,
            "intra_op_threads": self.options.get("intra_op_threads"),
            "inter_op_threads": self.options.get("inter_op_threads"),
            "graph_optimization_level": self.options.get("graph_optimization_level"),
            "onnxruntime": self._ort.__version__,
        }

    def close(self) -> None:
        self._sessions.clear()
