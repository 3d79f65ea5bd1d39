"""TensorRT backend: engine building (`s4t-edge build`) and a device-resident S4T runner.

Written against the documented TensorRT Python API of 10.3 (JetPack 6.1/6.2), 10.13 (JetPack 7.1)
and the 11.x migration guide; it has not been executed in this project's CI, which has no
TensorRT.

The package, one concern a module (read in this order):

    compat         importing TensorRT / onnx with install hints; the typing path per TensorRT family
    builder        `BuildConfig`, precision per graph (`graph_recipe`), `build_engines`
    fp16           the fp16 ONNX rewrite of the backbone for strongly typed builds
    engine_cache   ``ART/engines/``: engines keyed by graph hash, TensorRT version, GPU, precision
    update_graphs  SGD / Adam as ONNX graphs, compiled into the device-side optimiser engine
    buffers        where every tensor lives: arenas and offsets planned from the manifest (numpy)
    device_memory  the few CUDA calls behind `CudaDriver` (cuda-python, else pycuda), arenas
    runner         `TensorRTBackend`: engines over those buffers, `run_steps` (K steps on the GPU)

Design, in the order a batch flows through it:

* **Engines.**  Each artifact graph (backbone, step, predict) is parsed from its file with the
  ONNX parser (so external weights resolve) and built with the static shapes of the manifest.
  One build path per TensorRT family (`typing_path`): wherever the builder offers strongly typed
  networks (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, TensorRT 10.0+; the only kind in
  11.x) every graph is built strongly typed, so precision lives in the ONNX graph: an fp16
  backbone is an fp16 copy of the backbone ONNX with fp32 graph inputs and cut outputs
  (`convert_to_fp16`), and the step graph sees exactly the tensors it was exported with.  Only
  a TensorRT without strong typing gets the weakly typed FP16 builder flag (deprecated in 10.12,
  removed in 11.x) with the cut pinned to fp32.  The step graph is always fp32 (TF32 off): its
  outputs are gradients.  Engines are cached under ``ART/engines/`` by `EngineKey`
  (engine_cache.py), whose key holds the TensorRT version.
* **Memory.**  Every tensor lives in one of a few arenas planned from the manifest
  (buffers.py).  θ has two ping-pong copies plus a reset copy; the cut tensors, θ, gradients and
  optimiser state stay on the device for all K steps of a batch.
* **Optimiser on the device.**  SGD (momentum, weight decay, Nesterov) and Adam are tiny ONNX
  graphs (`make_update_model`) compiled as a fourth engine that reads θ, ∂L/∂θ and state from
  one ping-pong buffer and writes the other.  Per step only the loss scalars and Σ‖∂L/∂θ‖² come
  back to the host, which is what the guards need: a rejected step simply does not swap.
* **Jetson.**  On an integrated GPU the host and device share DRAM: image, loss and prediction
  buffers are mapped pinned memory bound directly into TensorRT (no copies at all).

Nothing here imports TensorRT, CUDA or onnx at import time.  The registry finds the backend
class (`TensorRTBackend`) in this package; what `s4t-edge build` and users call is listed below.
"""

from __future__ import annotations

from s4t_edge.runtime.backends.tensorrt.builder import BuildConfig, BuildReport, build_engines
from s4t_edge.runtime.backends.tensorrt.compat import import_tensorrt, tensorrt_available
from s4t_edge.runtime.backends.tensorrt.runner import (
    DeviceTensor,
    StepReport,
    StepsResult,
    TensorRTBackend,
)

__all__ = [
    "BuildConfig",
    "BuildReport",
    "DeviceTensor",
    "StepReport",
    "StepsResult",
    "TensorRTBackend",
    "build_engines",
    "import_tensorrt",
    "tensorrt_available",
]
