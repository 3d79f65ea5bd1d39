"""Device memory for the TensorRT backend: cuda-python first, pycuda where it is missing.

TensorRT only sees raw device addresses (`set_tensor_address`), so the backend needs a few CUDA
runtime calls of its own: allocations, pinned host buffers, async copies on one stream.  They are
gathered behind `CudaDriver`, a deliberately small interface with two implementations
(`cuda.bindings.runtime` -- imported as `cuda.cudart` on older cuda-python -- and pycuda), so the
rest of the backend never touches either binding and tests can substitute a host emulation.

Every CUDA import happens inside a function: importing this module never needs a GPU.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import BackendError
from s4t_edge.runtime.backends.tensorrt.buffers import ArenaPlan

_INSTALL_HINT = (
    "install cuda-python (`pip install cuda-python`, or `pip install s4t-edge[tensorrt]`); "
    "pycuda is accepted as a fallback"
)


@dataclass(frozen=True)
class DeviceInfo:
    """What identifies a GPU for engine caching and what a benchmark should record."""

    index: int  # CUDA ordinal
    name: str  # marketing name, e.g. "Orin" or "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "major.minor"; TensorRT engines are specific to it
    total_memory: int  # bytes
    integrated: bool  # shares DRAM with the CPU (Jetson): pinned host memory is device memory

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "compute_capability": self.compute_capability,
            "total_memory": self.total_memory,
            "integrated": self.integrated,
        }


def is_jetson() -> bool:
    """True on a Jetson (L4T) system; used only as a hint next to the device's `integrated` flag."""
    return Path("/etc/nv_tegra_release").exists()


class CudaDriver(ABC):
    """The handful of CUDA runtime calls the TensorRT backend needs, over raw integer addresses.

    Host-side arguments are contiguous numpy arrays (usually views of pinned memory); device
    addresses are Python ints, which is what TensorRT's `set_tensor_address` takes.
    """

    name: str = "abstract"

    @abstractmethod
    def device_info(self) -> DeviceInfo: ...

    @abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abstractmethod
    def free(self, ptr: int) -> None: ...

    @abstractmethod
    def malloc_host(self, nbytes: int, mapped: bool = False) -> tuple[np.ndarray, int]:
        """Pinned host bytes as a uint8 array, plus its device alias (0 unless `mapped`)."""

    @abstractmethod
    def free_host(self, array: np.ndarray) -> None: ...

    @abstractmethod
    def create_stream(self) -> Any: ...

    @abstractmethod
    def destroy_stream(self, stream: Any) -> None: ...

    @abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The `cudaStream_t` as an int, for `execute_async_v3`."""

    @abstractmethod
    def synchronize(self, stream: Any) -> None: ...

    @abstractmethod
    def memcpy_htod(self, dst: int, src: np.ndarray, stream: Any) -> None: ...

    @abstractmethod
    def memcpy_dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None: ...

    @abstractmethod
    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream: Any) -> None: ...

    @abstractmethod
    def memset(self, ptr: int, value: int, nbytes: int, stream: Any) -> None: ...

    @abstractmethod
    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    """A uint8 numpy view over `nbytes` of host memory at `ptr` (no copy, no ownership)."""
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    buf = (ctypes.c_uint8 * nbytes).from_address(ptr)
    return np.frombuffer(buf, dtype=np.uint8)


def _contiguous(array: np.ndarray) -> np.ndarray:
    if not array.flags.c_contiguous:
        raise BackendError("internal: host buffers given to CUDA copies must be C-contiguous")
    return array


class CudaPythonDriver(CudaDriver):
    """cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` before cuda-python 12.6).

    Every call returns a tuple whose first element is a `cudaError_t`; `_call` turns a failure into
    a BackendError naming the call, so a CUDA problem reads as one line, not a traceback.
    """

    name = "cuda-python"

    def __init__(self, device: int = 0, cudart: Any | None = None) -> None:
        self.cudart = cudart if cudart is not None else _import_cudart()
        self.device = device
        count = self._call("cudaGetDeviceCount", self.cudart.cudaGetDeviceCount())
        if int(count) <= device:
            raise BackendError(
                f"CUDA device {device} not found ({int(count)} visible); check `nvidia-smi` "
                "(or tegrastats on Jetson) and CUDA_VISIBLE_DEVICES"
            )
        self._call("cudaSetDevice", self.cudart.cudaSetDevice(device))

    def _call(self, what: str, result: Any) -> Any:
        if not isinstance(result, tuple):
            result = (result,)
        err, rest = result[0], result[1:]
        if err != self.cudart.cudaError_t.cudaSuccess:
            msg = str(err)
            try:
                name = self.cudart.cudaGetErrorString(err)
                msg = (name[1] if isinstance(name, tuple) else name).decode()
            except Exception:  # noqa: BLE001 - keep the original code when the string lookup fails
                pass
            raise BackendError(
                f"CUDA call {what} failed: {msg}; check the driver with `nvidia-smi` "
                "(or tegrastats on Jetson) and free GPU memory"
            )
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def device_info(self) -> DeviceInfo:
        prop = self._call(
            "cudaGetDeviceProperties", self.cudart.cudaGetDeviceProperties(self.device)
        )
        name = prop.name
        if isinstance(name, bytes | bytearray):
            name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(
            index=self.device,
            name=str(name).strip(),
            compute_capability=f"{int(prop.major)}.{int(prop.minor)}",
            total_memory=int(prop.totalGlobalMem),
            integrated=bool(prop.integrated),
        )

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.cudart.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.cudart.cudaFree(ptr))

    def malloc_host(self, nbytes: int, mapped: bool = False) -> tuple[np.ndarray, int]:
        size = max(int(nbytes), 1)
        if mapped:
            flags = self.cudart.cudaHostAllocMapped
            ptr = int(self._call("cudaHostAlloc", self.cudart.cudaHostAlloc(size, flags)))
            dev = int(
                self._call("cudaHostGetDevicePointer", self.cudart.cudaHostGetDevicePointer(ptr, 0))
            )
        else:
            ptr = int(self._call("cudaMallocHost", self.cudart.cudaMallocHost(size)))
            dev = 0
        return _host_view(ptr, int(nbytes)), dev

    def free_host(self, array: np.ndarray) -> None:
        if array.size:
            self._call("cudaFreeHost", self.cudart.cudaFreeHost(array.ctypes.data))

    def create_stream(self) -> Any:
        return self._call("cudaStreamCreate", self.cudart.cudaStreamCreate())

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self.cudart.cudaStreamDestroy(stream))

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(stream))

    def memcpy_htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        src = _contiguous(src)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(
            "cudaMemcpyAsync(H2D)",
            self.cudart.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream),
        )

    def memcpy_dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        dst = _contiguous(dst)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(
            "cudaMemcpyAsync(D2H)",
            self.cudart.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream),
        )

    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call(
            "cudaMemcpyAsync(D2D)", self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream)
        )

    def memset(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        self._call("cudaMemsetAsync", self.cudart.cudaMemsetAsync(ptr, value, nbytes, stream))

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._call("cudaMemGetInfo", self.cudart.cudaMemGetInfo())
        return int(free), int(total)


class PyCudaDriver(CudaDriver):
    """pycuda fallback.  Retains the device's primary context, the one TensorRT's runtime uses."""

    name = "pycuda"

    def __init__(self, device: int = 0, driver: Any | None = None) -> None:
        if driver is None:
            try:
                import pycuda.driver as driver  # noqa: PLC0415 - optional dependency
            except ImportError as e:
                raise BackendError(f"pycuda is not importable ({e}); {_INSTALL_HINT}") from None
        self.cuda = driver
        try:
            driver.init()
            if driver.Device.count() <= device:
                raise BackendError(
                    f"CUDA device {device} not found ({driver.Device.count()} visible); "
                    "check `nvidia-smi` and CUDA_VISIBLE_DEVICES"
                )
            self._device = driver.Device(device)
            self._ctx = self._device.retain_primary_context()
            self._ctx.push()
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - pycuda raises its own error types
            raise BackendError(f"pycuda could not open CUDA device {device}: {e}") from None
        self.device = device
        self._host_allocs: dict[int, Any] = {}
        self._device_allocs: dict[int, Any] = {}

    def device_info(self) -> DeviceInfo:
        major, minor = self._device.compute_capability()
        integrated = bool(self._device.get_attribute(self.cuda.device_attribute.INTEGRATED))
        return DeviceInfo(
            index=self.device,
            name=str(self._device.name()),
            compute_capability=f"{major}.{minor}",
            total_memory=int(self._device.total_memory()),
            integrated=integrated,
        )

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(int(nbytes), 1))
        ptr = int(alloc)
        self._device_allocs[ptr] = alloc
        return ptr

    def free(self, ptr: int) -> None:
        alloc = self._device_allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def malloc_host(self, nbytes: int, mapped: bool = False) -> tuple[np.ndarray, int]:
        flags = self.cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        arr = self.cuda.pagelocked_empty(max(int(nbytes), 1), np.uint8, mem_flags=flags)
        dev = int(arr.base.get_device_pointer()) if mapped else 0
        self._host_allocs[arr.ctypes.data] = arr
        return arr[: int(nbytes)], dev

    def free_host(self, array: np.ndarray) -> None:
        arr = self._host_allocs.pop(array.ctypes.data, None)
        if arr is not None and hasattr(arr.base, "free"):
            arr.base.free()

    def create_stream(self) -> Any:
        return self.cuda.Stream()

    def destroy_stream(self, stream: Any) -> None:
        del stream  # pycuda streams are released by garbage collection

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def memcpy_htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.cuda.memcpy_htod_async(dst, _contiguous(src), stream)

    def memcpy_dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(_contiguous(dst), src, stream)

    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_dtod_async(dst, src, nbytes, stream)

    def memset(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        self.cuda.memset_d8_async(ptr, value, nbytes, stream)

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self.cuda.mem_get_info()
        return int(free), int(total)


def _import_cudart() -> Any:
    """`cuda.bindings.runtime` (cuda-python >= 12.6), else the older `cuda.cudart` path."""
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # noqa: PLC0415

        return cudart
    except ImportError as e:
        raise BackendError(
            f"cuda-python is not importable ({e.name or e}); {_INSTALL_HINT}"
        ) from None


def get_driver(device: int = 0, prefer: str = "auto") -> CudaDriver:
    """Open CUDA device `device` through cuda-python, falling back to pycuda.

    Args:
        device: CUDA ordinal.
        prefer: "auto", "cuda-python" or "pycuda".

    Raises:
        BackendError: one line saying what is missing (binding, driver or device) and what to do.
    """
    if prefer not in ("auto", "cuda-python", "pycuda"):
        raise BackendError(f"unknown CUDA binding {prefer!r}; use auto, cuda-python or pycuda")
    errors: list[str] = []
    if prefer in ("auto", "cuda-python"):
        try:
            return CudaPythonDriver(device)
        except BackendError as e:
            if prefer == "cuda-python":
                raise
            errors.append(str(e))
    try:
        return PyCudaDriver(device)
    except BackendError as e:
        errors.append(str(e))
    # The first message is the informative one when cuda-python is present but the device is not.
    raise BackendError(errors[0] if errors else f"no CUDA binding found; {_INSTALL_HINT}")


# --------------------------------------------------------------------------------------------
# Owned allocations on top of a driver.


class DeviceArena:
    """One device allocation holding several tensors at planned offsets.

    Arenas make whole-state operations single calls: uploading θ, downloading all gradients,
    copying the source θ back, zeroing optimiser state.
    """

    def __init__(self, driver: CudaDriver, nbytes: int, label: str = "") -> None:
        self.driver = driver
        self.nbytes = int(nbytes)
        self.label = label
        self.ptr = driver.malloc(self.nbytes)
        self._finalizer = weakref.finalize(self, _safe(driver.free), self.ptr)

    def free(self) -> None:
        self._finalizer()

    @property
    def alive(self) -> bool:
        return self._finalizer.alive


class HostArena:
    """Pinned host bytes; with `mapped` on an integrated GPU, also the device's view of them.

    On Jetson the CPU and GPU share DRAM, so a mapped pinned buffer *is* device memory: binding
    TensorRT to `device_ptr` removes the copy instead of making it faster.
    """

    def __init__(self, driver: CudaDriver, nbytes: int, mapped: bool = False) -> None:
        self.driver = driver
        self.nbytes = int(nbytes)
        self.array, self.device_ptr = driver.malloc_host(self.nbytes, mapped=mapped)
        self.mapped = bool(mapped and self.device_ptr)
        self._finalizer = weakref.finalize(self, _safe(driver.free_host), self.array)

    def free(self) -> None:
        self._finalizer()


def _safe(fn: Callable[..., Any]) -> Callable[..., None]:
    """Wrap a release call so a failure at interpreter exit does not print a traceback."""

    def run(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - freeing during teardown must never raise
            pass

    return run


def env_device_index(default: int = 0) -> int:
    """Device ordinal from S4T_CUDA_DEVICE (a convenience for multi-GPU hosts)."""
    value = os.environ.get("S4T_CUDA_DEVICE")
    return int(value) if value and value.isdigit() else default


class MirroredArena:
    """An arena visible from both sides: pinned host bytes and the address kernels use.

    With `zero_copy` (integrated GPUs) the pinned memory is mapped and *is* the device buffer,
    so upload/download are no-ops; elsewhere they are one async copy of the whole arena.
    """

    def __init__(self, driver: CudaDriver, plan: ArenaPlan, zero_copy: bool) -> None:
        self.driver = driver
        self.plan = plan
        self.host = HostArena(driver, plan.nbytes, mapped=zero_copy)
        self.device = None if self.host.mapped else DeviceArena(driver, plan.nbytes, plan.name)
        self.ptr = self.host.device_ptr if self.device is None else self.device.ptr
        self.views = plan.views(self.host.array)

    def addr(self, name: str) -> int:
        return self.ptr + self.plan.slot(name).offset

    def upload(self, stream: Any) -> None:
        if self.device is not None:
            self.driver.memcpy_htod(self.ptr, self.host.array[: self.plan.nbytes], stream)

    def download(self, stream: Any) -> None:
        if self.device is not None:
            self.driver.memcpy_dtoh(self.host.array[: self.plan.nbytes], self.ptr, stream)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.host.free()
