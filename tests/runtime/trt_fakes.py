"""TensorRT and CUDA stand-ins: the TensorRT backend's own logic, end to end on the CPU.

`fake_tensorrt()` is a `tensorrt` module with the documented Python API of a chosen version
whose "engines" are ONNX Runtime sessions reading and writing raw host addresses; `HostDriver`
is a `CudaDriver` over host memory.  Together they exercise everything the backend does (engine
keys and caching, precision choices, buffer binding, ping-pong θ, the update engine, guards,
zero-copy, cleanup) but not TensorRT's behaviour, which they only mimic as documented for 10.3.
Used by tests/runtime/test_tensorrt_backend.py and tests/cli/test_build.py.
"""

from __future__ import annotations

import ctypes
import json
import types
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from s4t_edge.runtime.backends.tensorrt.device_memory import CudaDriver, DeviceInfo


class HostDriver(CudaDriver):
    """`CudaDriver` over host memory: "device" pointers are numpy buffers' addresses."""

    name = "host-emulation"

    def __init__(self, integrated: bool = False, gpu: str = "FakeGPU", cc: str = "8.7") -> None:
        self.live: dict[int, np.ndarray] = {}
        self.integrated = integrated
        self.gpu, self.cc = gpu, cc
        self.copies = 0

    def _alloc(self, nbytes: int) -> np.ndarray:
        arr = np.full(
            max(int(nbytes), 1) + 256, 0xCD, dtype=np.uint8
        )  # poison: catch missed writes
        off = (-arr.ctypes.data) % 256
        view = arr[off : off + max(int(nbytes), 1)]
        self.live[view.ctypes.data] = arr
        return view

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(0, self.gpu, self.cc, 1 << 30, self.integrated)

    def malloc(self, nbytes: int) -> int:
        return int(self._alloc(nbytes).ctypes.data)

    def free(self, ptr: int) -> None:
        self.live.pop(ptr)

    def malloc_host(self, nbytes: int, mapped: bool = False) -> tuple[np.ndarray, int]:
        view = self._alloc(nbytes)
        return view[: int(nbytes)], int(view.ctypes.data) if mapped else 0

    def free_host(self, array: np.ndarray) -> None:
        self.live.pop(array.ctypes.data)

    def create_stream(self) -> Any:
        return object()

    def destroy_stream(self, stream: Any) -> None:
        pass

    def stream_handle(self, stream: Any) -> int:
        return 1234

    def synchronize(self, stream: Any) -> None:
        pass

    def memcpy_htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.copies += 1
        ctypes.memmove(dst, src.ctypes.data, src.nbytes)

    def memcpy_dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.copies += 1
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)

    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        ctypes.memmove(dst, src, nbytes)

    def memset(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        ctypes.memset(ptr, value, nbytes)

    def mem_get_info(self) -> tuple[int, int]:
        return (1 << 29, 1 << 30)


_NP = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.INT64: "int64"}


def fake_tensorrt(
    version: str = "10.3.0.30",
    has_fp16_flag: bool | None = None,
    has_strong_typing: bool = True,
) -> types.ModuleType:
    """A stand-in `tensorrt` with the documented Python API of `version`; engines run in ORT.

    10.x: BuilderFlag.FP16 and OBEY_PRECISION_CONSTRAINTS exist (unless `has_fp16_flag` is
    False); 11.x: they are gone, as the 11.x migration guide lists, and so is
    ICudaEngine.device_memory_size.  `has_strong_typing=False` mimics a TensorRT whose
    NetworkDefinitionCreationFlag has no STRONGLY_TYPED.  A strongly typed network refuses
    per-layer output types, as the API documents.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    if has_fp16_flag is None:
        has_fp16_flag = major < 11
    trt.float32, trt.float16, trt.int64 = "float32", "float16", "int64"
    trt.builds = []  # (onnx model, network flags, builder flags, workspace) per build

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, level: int = 2) -> None:
            self.level = level

    class BuilderFlag:
        TF32 = "TF32"

    if has_fp16_flag:
        BuilderFlag.FP16 = "FP16"
        BuilderFlag.OBEY_PRECISION_CONSTRAINTS = "OBEY"

    class NetworkDefinitionCreationFlag:
        pass

    if has_strong_typing:
        NetworkDefinitionCreationFlag.STRONGLY_TYPED = 1

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class Tensor:
        def __init__(self, name: str, shape: list[int], dtype: str, is_out: bool) -> None:
            self.name, self.shape, self.dtype, self.is_network_output = name, shape, dtype, is_out

    class Layer:
        def __init__(self, outputs: list[Tensor], strongly_typed: bool) -> None:
            self.outputs, self.output_types = outputs, {}
            self.num_outputs = len(outputs)
            self.strongly_typed = strongly_typed

        def get_output(self, j: int) -> Tensor:
            return self.outputs[j]

        def set_output_type(self, j: int, dtype: str) -> None:
            assert not self.strongly_typed, "strongly typed networks refuse layer output types"
            self.output_types[j] = dtype

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.model = flags, None
            self.strongly_typed = major >= 11 or bool(flags & 2)
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.layers: list[Layer] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    def _dims(vi: Any) -> list[int]:
        return [
            d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim
        ]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            net = self.network
            net.model = model
            inits = {i.name for i in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name not in inits:
                    dtype = _NP[vi.type.tensor_type.elem_type]
                    net.inputs.append(Tensor(vi.name, _dims(vi), dtype, False))
            for vi in model.graph.output:
                net.outputs.append(
                    Tensor(vi.name, _dims(vi), _NP[vi.type.tensor_type.elem_type], True)
                )
            net.layers.append(Layer(net.outputs, net.strongly_typed))
            return True

        def get_error(self, i: int) -> str:
            return ""

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return self.blob + b"."

    class Config:
        def __init__(self) -> None:
            self.flags = {"TF32"}  # TensorRT enables TF32 by default
            self.workspace = None
            self.cache = None

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Any:
            raise AssertionError("static shapes need no optimisation profile")

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            header = {
                "flags": sorted(config.flags),
                "network_flags": network.flags,
                "outputs": {t.name: t.dtype for t in network.outputs},
                "layer_types": {str(k): v for k, v in network.layers[0].output_types.items()},
                "workspace": config.workspace,
            }
            if network.strongly_typed:
                assert "FP16" not in config.flags, "precision flags need a weakly typed network"
            trt.builds.append((network.model, network.flags, set(config.flags), config.workspace))
            return (
                b"FAKEPLAN"
                + json.dumps(header).encode()
                + b"\n"
                + network.model.SerializeToString()
            )

    class Engine:
        def __init__(self, blob: bytes) -> None:
            head, body = blob[len(b"FAKEPLAN") :].split(b"\n", 1)
            self.header = json.loads(head)
            model = onnx.load_from_string(body)
            self.session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
            inits = {i.name for i in model.graph.initializer}
            self.io: list[tuple[str, str, tuple[int, ...], str]] = []
            for vi in model.graph.input:
                if vi.name not in inits:
                    self.io.append(
                        ("INPUT", vi.name, tuple(_dims(vi)), _NP[vi.type.tensor_type.elem_type])
                    )
            for vi in model.graph.output:
                self.io.append(
                    ("OUTPUT", vi.name, tuple(_dims(vi)), _NP[vi.type.tensor_type.elem_type])
                )
            self.device_memory_size_v2 = 4096

        num_io_tensors = property(lambda self: len(self.io))

        def _find(self, name: str) -> tuple[str, str, tuple[int, ...], str]:
            return next(t for t in self.io if t[1] == name)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][1]

        def get_tensor_mode(self, name: str) -> str:
            return self._find(name)[0]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._find(name)[2]

        def get_tensor_dtype(self, name: str) -> str:
            return self._find(name)[3]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.addr = engine, {}
            self.runs = 0

        def set_input_shape(self, name: str, shape: Any) -> bool:
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.engine.get_tensor_shape(name)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            assert ptr % 256 == 0, f"{name} bound to an unaligned address"
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 1234
            feeds, outs = {}, []
            for mode, name, shape, dtype in self.engine.io:
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                if mode == "INPUT":
                    raw = (ctypes.c_uint8 * nbytes).from_address(self.addr[name])
                    feeds[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
                else:
                    outs.append((name, nbytes))
            results = self.engine.session.run([n for n, _ in outs], feeds)
            for (name, nbytes), value in zip(outs, results):
                value = np.ascontiguousarray(value)
                assert value.nbytes == nbytes, name
                ctypes.memmove(self.addr[name], value.ctypes.data, nbytes)
            self.runs += 1
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
            if not blob.startswith(b"FAKEPLAN"):
                return None
            return Engine(blob)

    def nptype(dtype: str) -> Any:
        return np.dtype(dtype).type

    for obj in (
        Logger, BuilderFlag, NetworkDefinitionCreationFlag, MemoryPoolType, TensorIOMode,
        Builder, OnnxParser, Runtime, nptype,
    ):  # fmt: skip
        setattr(trt, obj.__name__, obj)
    return trt
