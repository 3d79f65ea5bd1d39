"""The TensorRT runner: engines over device-resident buffers, and the K-step fast path.

In the order a batch flows through it: the image goes up once, the backbone engine writes the cut
into a cut arena that stays on the GPU for all K steps (`DeviceTensor`); per step the step engine
computes loss and ∂L/∂θ at θ[cur], the update engine (update_graphs.py) writes θ[other] and the
optimiser state, and only the loss scalars and Σ‖∂L/∂θ‖² come back to the host, which is what
the guards need: a rejected step simply does not swap.  Every buffer is planned from the manifest
(buffers.py) and allocated once (device_memory.py); on an integrated GPU (Jetson) image, loss and
prediction buffers are mapped pinned memory bound directly into TensorRT (no copies at all).

`TensorRTBackend` also implements the plain `Backend` interface (numpy θ in, numpy gradients
out) so the Adapter and parity tests can drive it like any other backend; `run_steps` is the
fast path.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError, BackendError, ConfigError
from s4t_edge.runtime.backends.base import (
    Backend,
    Cut,
    StepResult,
    control_feeds,
    task_weight_feeds,
)
from s4t_edge.runtime.backends.tensorrt.buffers import (
    GRAD_SQ_NAME,
    HYPER_NAME,
    HYPER_SIZE,
    NEW_PREFIX,
    NEW_STATE_PREFIX,
    OPTIMIZER_SLOTS,
    STATE_PREFIX,
    ArenaPlan,
    BufferPlan,
    BufferSlot,
    check_engine_io,
    plan_buffers,
    state_specs,
)
from s4t_edge.runtime.backends.tensorrt.builder import (
    ARTIFACT_GRAPHS,
    BuildConfig,
    EngineBuilder,
    engine_key,
    graph_recipe,
    graph_sha,
    load_artifact,
    resolve_artifact_engine,
    resolve_update_engine,
)
from s4t_edge.runtime.backends.tensorrt.compat import (
    STRONG_ONLY_FROM,
    import_tensorrt,
    trt_version_tuple,
)
from s4t_edge.runtime.backends.tensorrt.device_memory import (
    CudaDriver,
    DeviceArena,
    HostArena,
    MirroredArena,
    get_driver,
    is_jetson,
)
from s4t_edge.runtime.backends.tensorrt.engine_cache import (
    CacheHit,
    EngineCache,
    read_bytes,
    write_bytes,
)
from s4t_edge.runtime.backends.tensorrt.update_graphs import (
    hyper_values,
    manifest_optimizer,
    optimizer_spec,
    update_graph_name,
    update_model_for,
)


class _Engine:
    """A deserialized engine with one execution context and its I/O table."""

    def __init__(
        self,
        trt: Any,
        runtime: Any,
        path: Path,
        graph: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
    ):
        self.graph = graph
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"TensorRT could not load the {graph} engine {path.name} (built by another TensorRT "
                "or GPU?); rebuild it with `s4t-edge build ART --force`"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {graph} (out of GPU memory?)"
            )
        expected = {s.name: tuple(int(d) for d in s.shape) for s in inputs}
        io: dict[str, tuple[str, tuple[int, ...], str]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(engine.get_tensor_shape(name))
            if is_input and any(d < 0 for d in shape) and name in expected:
                self.context.set_input_shape(name, expected[name])
                shape = tuple(self.context.get_tensor_shape(name))
            elif any(d < 0 for d in shape):
                shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            io[name] = ("input" if is_input else "output", shape, dtype)
        check_engine_io(graph, inputs, outputs, io)
        self.io = io
        self.names = tuple(io)
        # device_memory_size_v2 (10.1+) replaced device_memory_size, which 11.x removed.
        size = getattr(engine, "device_memory_size_v2", None)
        if size is None and trt_version_tuple(str(trt.__version__))[0] < STRONG_ONLY_FROM:
            size = getattr(engine, "device_memory_size", 0)
        self.activation_bytes = int(size or 0)

    def bind(self, addresses: Mapping[str, int]) -> None:
        for name in self.names:
            if not self.context.set_tensor_address(name, int(addresses[name])):
                raise BackendError(f"TensorRT rejected the address of {self.graph}:{name}")

    def run(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise BackendError(f"TensorRT failed to enqueue the {self.graph} engine; see its log")

    def close(self) -> None:
        self.context = None
        self.engine = None


class _CutStorage:
    """Owner of one batch's cut arena, shared by the tensors of a Cut (weak-referenceable)."""

    __slots__ = ("__weakref__", "arena")

    def __init__(self, arena: DeviceArena) -> None:
        self.arena = arena


class DeviceTensor:
    """A cut tensor that stays on the GPU; `np.asarray(t)` copies it to the host (debugging)."""

    def __init__(self, backend: TensorRTBackend, storage: _CutStorage, slot: BufferSlot) -> None:
        self._backend = weakref.ref(backend)
        self._storage = storage  # keeps the arena from being recycled while this tensor lives
        self.arena = storage.arena
        self.slot = slot

    @property
    def ptr(self) -> int:
        return self.arena.ptr + self.slot.offset

    @property
    def shape(self) -> tuple[int, ...]:
        return self.slot.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.slot.dtype)

    def numpy(self) -> np.ndarray:
        backend = self._backend()
        if backend is None or not self.arena.alive:
            raise BackendError("this cut tensor's backend was closed; run backbone() again")
        return backend._download_tensor(self.ptr, self.slot)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        return arr.astype(dtype) if dtype is not None else arr


@dataclass(frozen=True)
class StepReport:
    """What the guard of `run_steps` sees after each step, before θ is committed."""

    index: int  # step number within this call, 0-based
    loss: float
    task_losses: dict[str, float]
    grad_sq: float  # Σ‖∂L/∂θ‖²: non-finite iff some gradient is
    finite: bool  # loss and gradients finite (a non-finite step is always rejected)


@dataclass
class StepsResult:
    """Outcome of `run_steps`: the adapted θ and optimiser state, and the per-step trace."""

    theta: dict[str, np.ndarray]
    state: dict[str, Any]  # Optimizer.state_dict() format: {"config", "steps", "state"}
    losses: list[float]
    task_losses: list[dict[str, float]]
    actions: list[str]  # per step: accept | reject | reset | stop
    seconds: float  # whole call, uploads and downloads included
    step_ms: list[float] = field(default_factory=list)  # per step: step + update + loss readback

    @property
    def rejected(self) -> int:
        return sum(a == "reject" for a in self.actions)

    @property
    def resets(self) -> int:
        return sum(a == "reset" for a in self.actions)


GuardFn = Callable[[StepReport], str | None]


class TensorRTBackend(Backend):
    """TensorRT engines over device-resident buffers (see the module docstring).

    Options (all optional; `s4t-edge build` records defaults in ``ART/engines/index.json``):
        fp16, tf32, workspace_mib, timing_cache: as in `BuildConfig` (typing follows the
            TensorRT version, see `typing_path`).
        build: "auto" (build missing or stale engines, the default), "never" (fail instead,
            for deployments that must not compile on the device) or "force".
        device: CUDA ordinal.  cuda: "auto" | "cuda-python" | "pycuda".
        zero_copy: map host I/O buffers into the GPU; default on integrated GPUs (Jetson).
        optimizer: optimiser spec whose update engine to prepare now (default: the manifest's).
        log: sink for build messages.  driver: a `CudaDriver` to use instead of opening one
            (tests inject a host-memory emulation here).

    Beyond the `Backend` interface: `run_steps` (K device-resident steps, the fast path an
    adaptation loop should prefer when present), `memory_info` and `supports_run_steps`.
    """

    name = "tensorrt"
    supports_run_steps = True

    def __init__(
        self,
        artifact: Any,
        *,
        fp16: bool | None = None,
        tf32: bool | None = None,
        workspace_mib: int | None = None,
        timing_cache: str | None = None,
        build: str = "auto",
        device: int = 0,
        cuda: str = "auto",
        zero_copy: bool | None = None,
        optimizer: Any = None,
        log: Callable[[str], None] | None = None,
        driver: CudaDriver | None = None,
    ) -> None:
        art = load_artifact(artifact)
        given = {
            "fp16": fp16,
            "tf32": tf32,
            "workspace_mib": workspace_mib,
            "timing_cache": timing_cache,
        }
        super().__init__(
            art, build=build, device=device, **{k: v for k, v in given.items() if v is not None}
        )
        self._closed = True  # until everything below exists
        if build not in ("auto", "never", "force"):
            raise ConfigError(f"build must be auto, never or force, not {build!r}")
        self.trt = import_tensorrt()
        self.driver: CudaDriver = driver or get_driver(int(device), str(cuda))
        self.device = self.driver.device_info()
        self.cache = EngineCache.for_artifact(art.root)
        base = self.cache.default_build() or {}
        self.build_config = BuildConfig.from_dict(
            {
                **base,
                **{k: v for k, v in given.items() if v is not None},
                "force": build == "force",
                "device": int(device),
            }
        )
        self._log: Callable[[str], None] = log or (lambda _m: None)
        self._build_mode = build
        self._builder: EngineBuilder | None = None
        self.zero_copy = self.device.integrated if zero_copy is None else bool(zero_copy)
        self._runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.theta_names = tuple(t.name for t in art.theta_specs)
        self.task_names = tuple(
            o.name[len("loss/") :] for o in art.graphs["step"].outputs if o.name.startswith("loss/")
        )
        self.pred_names = tuple(o.name for o in art.graphs["predict"].outputs)
        self.plan: BufferPlan = plan_buffers(art, optimizer=None)
        self._weights_name = art.task_weights.name if art.task_weights is not None else None
        self.engines: dict[str, _Engine] = {}
        self._updates: dict[str, _Updater] = {}
        self._owned: list[Any] = []  # every arena, freed by close()
        self._noise_bank: MirroredArena | None = None
        self._cut_pool: list[DeviceArena] = []
        self.stream = self.driver.create_stream()
        self.stream_handle = self.driver.stream_handle(self.stream)
        self._closed = False
        try:
            for gname in ARTIFACT_GRAPHS:
                hit = self._engine_hit(gname)
                g = art.graphs[gname]
                self.engines[gname] = _Engine(
                    self.trt, self._runtime, hit.path, gname, g.inputs, g.outputs
                )
            self._allocate()
            first = optimizer if optimizer is not None else manifest_optimizer(art)
            if first is not None:
                self._update_engine(optimizer_spec(first))
        except BaseException:
            self.close()
            raise

    def _ensure_builder(self) -> EngineBuilder:
        if self._builder is None:
            dev = self.device
            path = (
                Path(self.build_config.timing_cache)
                if self.build_config.timing_cache
                else self.cache.timing_cache_path(
                    str(self.trt.__version__), dev.name, dev.compute_capability
                )
            )
            self._timing_path = path
            self._builder = EngineBuilder(self.trt, self.build_config, read_bytes(path), self._log)
        return self._builder

    def _flush_timing_cache(self) -> None:
        if self._builder is not None and self._builder.timing_changed:
            write_bytes(self._timing_path, self._builder.timing_blob or b"")
            self._builder.timing_changed = False

    def _engine_hit(self, gname: str) -> CacheHit:
        recipe = graph_recipe(gname, self.build_config, self.trt)
        key = engine_key(
            gname, graph_sha(self.artifact, gname), recipe.precision, self.trt, self.device
        )
        if self._build_mode == "never":
            path, reason = self.cache.lookup(key)
            if path is None:
                raise ArtifactError(
                    f"no usable {gname} engine for this GPU/TensorRT/precision ({reason}); run "
                    f"`s4t-edge build {self.artifact.root}` on this device"
                )
            return CacheHit(key, path, built=False, reason="cached", seconds=0.0)
        hit = resolve_artifact_engine(
            self.artifact,
            gname,
            self.build_config,
            self.trt,
            self.device,
            self.cache,
            self._ensure_builder(),
            self._log,
        )
        if hit.built:
            self._log(f"built {gname} engine in {hit.seconds:.1f} s ({hit.reason})")
        self._flush_timing_cache()
        return hit

    def _own(self, resource: Any) -> Any:
        self._owned.append(resource)
        return resource

    def _allocate(self) -> None:
        """All fixed buffers, once: nothing is allocated per step."""
        d, p, zc = self.driver, self.plan, self.zero_copy
        self._image = self._own(MirroredArena(d, p.arena("image"), zc))
        self._noise = self._own(MirroredArena(d, p.arena("noise"), zc))
        # The loss scalars and the update graph's Σ‖g‖² share one arena: one small copy per step.
        self._losses_plan = ArenaPlan.from_specs(
            "losses", [*p.arena("losses").slots, _TS(GRAD_SQ_NAME, (), "float32")]
        )
        self._losses = self._own(MirroredArena(d, self._losses_plan, zc))
        # Gradients are written and read by the GPU every step: always plain device memory.
        self._grads = self._own(MirroredArena(d, p.arena("grads"), zero_copy=False))
        self._preds = self._own(MirroredArena(d, p.arena("predictions"), zc))
        hyper_plan = ArenaPlan.from_specs("hyper", [_TS(HYPER_NAME, (HYPER_SIZE,), "float32")])
        self._hyper = self._own(MirroredArena(d, hyper_plan, zc))
        theta_plan = p.arena("theta")
        # θ[0], θ[1]: ping-pong for the optimiser; θ[2]: the source θ a reset restores.
        self._theta = [self._own(DeviceArena(d, theta_plan.nbytes, f"theta{i}")) for i in range(3)]
        self._theta_host = self._own(HostArena(d, theta_plan.nbytes))
        self._theta_views = theta_plan.views(self._theta_host.array)
        self._cut_plan = p.arena("cut")

    def _update_engine(self, spec: Mapping[str, Any]) -> _Updater:
        gname = update_graph_name(spec["name"], spec["nesterov"])
        if gname in self._updates:
            return self._updates[gname]
        model = update_model_for(self.artifact, spec)
        import hashlib  # noqa: PLC0415

        blob = model.SerializeToString()
        key = engine_key(gname, hashlib.sha256(blob).hexdigest(), "fp32", self.trt, self.device)
        if self._build_mode == "never":
            path, reason = self.cache.lookup(key)
            if path is None:
                raise ArtifactError(
                    f"no usable {gname} engine ({reason}); run `s4t-edge build {self.artifact.root}` "
                    "on this device, or use build='auto'"
                )
        else:
            hit = resolve_update_engine(
                self.artifact,
                spec,
                self.build_config,
                self.trt,
                self.device,
                self.cache,
                self._ensure_builder(),
            )
            self._flush_timing_cache()
            path = hit.path
        # The update graph's I/O, described in manifest terms for the I/O check.
        ins = [_TS(i.name, _dims(i), "float32") for i in model.graph.input]
        outs = [_TS(o.name, _dims(o), "float32") for o in model.graph.output]
        eng = _Engine(self.trt, self._runtime, path, gname, ins, outs)
        splan = ArenaPlan.from_specs("state", state_specs(self.artifact.theta_specs, spec["name"]))
        host = self._own(HostArena(self.driver, splan.nbytes))
        updater = _Updater(
            engine=eng,
            plan=splan,
            states=[
                self._own(DeviceArena(self.driver, splan.nbytes, f"state{i}")) for i in range(2)
            ],
            host=host,
            views=splan.views(host.array),
        )
        self._updates[gname] = updater
        return updater

    # ------------------------------------------------------------------------------ helpers
    def _sync(self) -> None:
        self.driver.synchronize(self.stream)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this TensorRT session is closed; load the artifact again")

    def _download_tensor(self, ptr: int, slot: BufferSlot) -> np.ndarray:
        out = np.empty(slot.shape, dtype=slot.dtype)
        self.driver.memcpy_dtoh(out.reshape(-1).view(np.uint8), ptr, self.stream)
        self._sync()
        return out

    def _check_array(self, what: str, arr: Any, spec: Any) -> np.ndarray:
        a = np.asarray(arr)
        shape = tuple(int(d) for d in spec.shape)
        if a.shape != shape:
            raise BackendError(
                f"{what} has shape {list(a.shape)} but the engines were built for {list(shape)} "
                "(TensorRT shapes are static); re-export with that batch/size or resize the input"
            )
        return np.ascontiguousarray(a, dtype=spec.dtype)

    def _stage_theta(self, theta: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.theta_names if n not in theta]
        if missing:
            raise BackendError(
                f"θ is missing {len(missing)} tensor(s), e.g. {missing[0]!r}; "
                "pass every θ tensor of the manifest"
            )
        for spec in self.artifact.theta_specs:
            np.copyto(
                self._theta_views[spec.name],
                self._check_array(f"θ tensor {spec.name!r}", theta[spec.name], spec),
            )

    def _upload_theta(self, theta: Mapping[str, np.ndarray], dst: DeviceArena) -> None:
        self._stage_theta(theta)
        self.driver.memcpy_htod(
            dst.ptr, self._theta_host.array[: self.plan.arena("theta").nbytes], self.stream
        )

    def _download_theta(self, src: DeviceArena) -> dict[str, np.ndarray]:
        n = self.plan.arena("theta").nbytes
        self.driver.memcpy_dtoh(self._theta_host.array[:n], src.ptr, self.stream)
        self._sync()
        return {name: self._theta_views[name].copy() for name in self.theta_names}

    def _cut_ptrs(self, cut: Cut) -> dict[str, int]:
        """Device addresses of the cut; a numpy Cut (another backend's) is uploaded first."""
        ptrs: dict[str, int] = {}
        foreign: dict[str, np.ndarray] = {}
        for spec in self.artifact.cut:
            t = cut.tensors.get(spec.name)
            if t is None:
                raise BackendError(
                    f"cut tensor {spec.name!r} is missing; pass the Cut returned by backbone()"
                )
            if isinstance(t, DeviceTensor):
                if t._backend() is not self or not t.arena.alive:
                    raise BackendError(
                        "this Cut belongs to another (or a closed) TensorRT session; "
                        "run backbone() again"
                    )
                ptrs[spec.name] = t.ptr
            else:
                foreign[spec.name] = self._check_array(f"cut tensor {spec.name!r}", t, spec)
        if foreign:
            # Uploaded once per (Cut, session) and kept in the Cut, so it lives as long as the
            # Cut does and the K steps of a batch reuse it.
            tag = f"_tensorrt_upload_{id(self)}"
            arena = cut.extra.get(tag)
            if not isinstance(arena, DeviceArena) or not arena.alive:
                arena = DeviceArena(self.driver, self._cut_plan.nbytes, "cut")
                host = np.zeros(self._cut_plan.nbytes, dtype=np.uint8)
                views = self._cut_plan.views(host)
                for name, arr in foreign.items():
                    views[name][...] = arr
                self.driver.memcpy_htod(arena.ptr, host, self.stream)
                self._sync()
                cut.extra[tag] = arena
            for name in foreign:
                ptrs[name] = arena.ptr + self._cut_plan.slot(name).offset
        return ptrs

    def _new_cut_arena(self) -> DeviceArena:
        """Cut tensors of one batch; recycled when their Cut is dropped, freed by close()."""
        if self._cut_pool:
            return self._cut_pool.pop()
        return self._own(DeviceArena(self.driver, self._cut_plan.nbytes, "cut"))

    def _release_cut_arena(self, arena: DeviceArena) -> None:
        if self._closed or len(self._cut_pool) >= 2:
            arena.free()
            with contextlib.suppress(ValueError):
                self._owned.remove(arena)
        else:
            self._cut_pool.append(arena)

    def _step_addresses(
        self, cut_ptrs: Mapping[str, int], theta: DeviceArena, noise_ptr: int
    ) -> dict[str, int]:
        theta_plan = self.plan.arena("theta")
        addr: dict[str, int] = dict(cut_ptrs)
        for name in self.theta_names:
            addr[name] = theta.ptr + theta_plan.slot(name).offset
        addr[self.artifact.mask_noise.name] = noise_ptr
        if self._weights_name is not None:  # one value per batch, next to the single noise
            addr[self._weights_name] = self._noise.addr(self._weights_name)
        for slot in self._losses_plan.slots:
            addr[slot.name] = self._losses.ptr + slot.offset
        for slot in self.plan.arena("grads").slots:
            addr[slot.name] = self._grads.ptr + slot.offset
        for slot in self.plan.arena("predictions").slots:
            addr[slot.name] = self._preds.ptr + slot.offset
        return addr

    def _read_losses(self) -> tuple[float, dict[str, float]]:
        v = self._losses.views
        loss = float(np.asarray(v["loss"]).reshape(-1)[0])
        tasks = {t: float(np.asarray(v[f"loss/{t}"]).reshape(-1)[0]) for t in self.task_names}
        return loss, tasks

    # ------------------------------------------------------------------------------ Backend API
    def backbone(self, image: np.ndarray, bn_mix: float = 1.0) -> Cut:
        self._check_open()
        spec = self.artifact.input
        np.copyto(self._image.views[spec.name], self._check_array("image batch", image, spec))
        controls = control_feeds(self.artifact, bn_mix)
        for name, value in controls.items():
            np.copyto(self._image.views[name], value)
        self._image.upload(self.stream)
        arena = self._new_cut_arena()
        addr = {spec.name: self._image.addr(spec.name)}
        addr.update({name: self._image.addr(name) for name in controls})
        for slot in self._cut_plan.slots:
            addr[slot.name] = arena.ptr + slot.offset
        eng = self.engines["backbone"]
        eng.bind(addr)
        eng.run(self.stream_handle)
        self._sync()
        # The arena is recycled once neither the Cut nor any of its tensors is referenced.
        storage = _CutStorage(arena)
        weakref.finalize(storage, _safe_call(weakref.WeakMethod(self._release_cut_arena)), arena)
        tensors = {slot.name: DeviceTensor(self, storage, slot) for slot in self._cut_plan.slots}
        return Cut(tensors=tensors, batch=int(spec.shape[0]), extra={"backend": self.name})

    def step(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        mask_noise: np.ndarray,
        task_weights: np.ndarray | None = None,
    ) -> StepResult:
        """One S4T step with a host round trip (θ up, gradients down): parity and simple loops."""
        self._check_open()
        cut_ptrs = self._cut_ptrs(cut)
        noise_spec = self.artifact.mask_noise
        self._upload_theta(theta, self._theta[0])
        np.copyto(
            self._noise.views[noise_spec.name],
            self._check_array("mask noise", mask_noise, noise_spec),
        )
        self._stage_task_weights(task_weights)
        self._noise.upload(self.stream)
        eng = self.engines["step"]
        eng.bind(self._step_addresses(cut_ptrs, self._theta[0], self._noise.addr(noise_spec.name)))
        eng.run(self.stream_handle)
        self._losses.download(self.stream)
        self._grads.download(self.stream)
        self._sync()
        loss, tasks = self._read_losses()
        grads = {}
        for slot in self.plan.arena("grads").slots:
            grads[slot.name[len("grad/") :]] = self._grads.views[slot.name].copy()
        return StepResult(loss=loss, task_losses=tasks, grads=grads)

    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_open()
        cut_ptrs = self._cut_ptrs(cut)
        self._upload_theta(theta, self._theta[0])
        eng = self.engines["predict"]
        addr = self._step_addresses(
            cut_ptrs, self._theta[0], self._noise.addr(self.artifact.mask_noise.name)
        )
        eng.bind(addr)
        eng.run(self.stream_handle)
        self._preds.download(self.stream)
        self._sync()
        out = {}
        for name in self.pred_names:
            task = name[len("pred/") :] if name.startswith("pred/") else name
            out[task] = self._preds.views[name].copy()
        return out

    def _stage_task_weights(self, task_weights: np.ndarray | None) -> None:
        """Copy the task weights into the noise arena (uploaded with it); none: nothing to do."""
        for name, value in task_weight_feeds(self.artifact, task_weights).items():
            np.copyto(self._noise.views[name], value)

    # ------------------------------------------------------------------------------ fast path
    def _noise_rows(self, count: int) -> MirroredArena:
        """A bank of `count` mask-noise rows: all K noises go up in one copy per batch."""
        spec = self.artifact.mask_noise
        if self._noise_bank is None or len(self._noise_bank.plan.slots) < count:
            if self._noise_bank is not None:
                self._noise_bank.free()
                self._owned.remove(self._noise_bank)
            rows = [_TS(f"row{i}", tuple(spec.shape), spec.dtype) for i in range(count)]
            plan = ArenaPlan.from_specs("noise_bank", rows)
            self._noise_bank = self._own(MirroredArena(self.driver, plan, self.zero_copy))
        return self._noise_bank

    def run_steps(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        noises: Sequence[np.ndarray],
        optimizer: Any = None,
        state: Mapping[str, Any] | None = None,
        *,
        source_theta: Mapping[str, np.ndarray] | None = None,
        guard: GuardFn | None = None,
        task_weights: np.ndarray | None = None,
    ) -> StepsResult:
        """K S4T steps with θ, gradients and optimiser state kept on the GPU.

        Per step: the step engine computes loss and ∂L/∂θ at θ[cur]; the update engine writes
        θ[other] and state[other]; the loss scalars and Σ‖g‖² are copied to the host; then
        `guard` decides.  "accept" swaps the ping-pong buffers, "reject" keeps θ and state as
        they were, "reset" restores `source_theta` and zeroes the optimiser state (step count 0),
        "stop" rejects and ends early.  A non-finite loss or gradient is always rejected.

        Args:
            cut: from `backbone` (or a numpy Cut of another backend, uploaded once).
            theta: starting θ (numpy, manifest names).
            noises: one mask-noise array per step; K = len(noises).
            optimizer: spec like the manifest's ``s4t.optimizer`` ({name: sgd|adam, lr, momentum,
                weight_decay, nesterov, betas, eps}); default the manifest's.
            state: optimiser state to continue from (online mode), in the format of
                `s4t_edge.runtime.optim.Optimizer.state_dict()`: {"config", "steps", "state":
                {θ name: {"momentum_buffer"} (SGD) | {"exp_avg", "exp_avg_sq"} (Adam)}};
                None = fresh.  The result's `state` has the same format (`load_state_dict`).
            source_theta: θ restored by a "reset" (default: `theta`).
            guard: called with a `StepReport` after every step; returns an action (None = accept).
            task_weights: the weights of a first-step artifact for all K steps (None: all 1).

        Returns:
            StepsResult with the final θ and state (numpy) and the per-step trace.
        """
        self._check_open()
        t0 = time.perf_counter()
        spec = optimizer_spec(
            optimizer if optimizer is not None else manifest_optimizer(self.artifact)
        )
        updater = self._update_engine(spec)
        upd, states, splan = updater.engine, updater.states, updater.plan
        cut_ptrs = self._cut_ptrs(cut)
        noise_spec = self.artifact.mask_noise
        k_steps = len(noises)
        if k_steps == 0:
            theta0 = {n: np.array(theta[n], dtype=np.float32) for n in self.theta_names}
            return StepsResult(theta0, _state_dict(spec, 0, {}), [], [], [], 0.0)
        bank = self._noise_rows(k_steps)
        for i, noise in enumerate(noises):
            np.copyto(
                bank.views[f"row{i}"],
                self._check_array(f"mask noise of step {i}", noise, noise_spec),
            )
        bank.upload(self.stream)
        self._stage_task_weights(task_weights)  # refuses weights a published artifact lacks
        if self._weights_name is not None:
            self._noise.upload(self.stream)

        theta_plan = self.plan.arena("theta")
        self._upload_theta(theta, self._theta[0])
        self._sync()  # the staging buffer is reused for the source θ just below
        if source_theta is not None:
            self._upload_theta(source_theta, self._theta[2])
        else:
            self.driver.memcpy_dtod(
                self._theta[2].ptr, self._theta[0].ptr, theta_plan.nbytes, self.stream
            )
        t_step = int(state.get("steps", 0)) if state else 0
        per_param = (state or {}).get("state") or {}
        if per_param:
            for slot_name in OPTIMIZER_SLOTS[spec["name"]]:
                for tname in self.theta_names:
                    view = updater.views[f"{STATE_PREFIX}{slot_name}/{tname}"]
                    value = (per_param.get(tname) or {}).get(slot_name)
                    view[...] = 0.0 if value is None else value
            self.driver.memcpy_htod(states[0].ptr, updater.host.array[: splan.nbytes], self.stream)
        else:
            self.driver.memset(states[0].ptr, 0, splan.nbytes, self.stream)

        step_eng = self.engines["step"]
        cur = 0
        losses: list[float] = []
        task_trace: list[dict[str, float]] = []
        actions: list[str] = []
        step_ms: list[float] = []
        for k in range(k_steps):
            t_k = time.perf_counter()
            nxt = 1 - cur
            noise_ptr = bank.ptr + bank.plan.slot(f"row{k}").offset
            step_eng.bind(self._step_addresses(cut_ptrs, self._theta[cur], noise_ptr))
            step_eng.run(self.stream_handle)
            self._hyper.views[HYPER_NAME][...] = hyper_values(spec, t_step + 1)
            self._hyper.upload(self.stream)
            upd.bind(
                self._update_addresses(
                    upd, self._theta[cur], self._theta[nxt], states[cur], states[nxt], splan
                )
            )
            upd.run(self.stream_handle)
            self._losses.download(self.stream)
            self._sync()
            step_ms.append((time.perf_counter() - t_k) * 1e3)
            loss, tasks = self._read_losses()
            gsq = float(np.asarray(self._losses.views[GRAD_SQ_NAME]).reshape(-1)[0])
            finite = (
                math.isfinite(loss)
                and math.isfinite(gsq)
                and all(math.isfinite(v) for v in tasks.values())
            )
            action = "accept"
            if guard is not None:
                action = guard(StepReport(k, loss, tasks, gsq, finite)) or "accept"
            if action not in ("accept", "reject", "reset", "stop"):
                raise ConfigError(
                    f"guard returned {action!r}; expected accept, reject, reset or stop"
                )
            if not finite and action == "accept":
                action = "reject"
            losses.append(loss)
            task_trace.append(tasks)
            actions.append(action)
            if action == "accept":
                cur, t_step = nxt, t_step + 1
            elif action == "reset":
                self.driver.memcpy_dtod(
                    self._theta[cur].ptr, self._theta[2].ptr, theta_plan.nbytes, self.stream
                )
                self.driver.memset(states[cur].ptr, 0, splan.nbytes, self.stream)
                t_step = 0
            elif action == "stop":
                break
        theta_out = self._download_theta(self._theta[cur])
        self.driver.memcpy_dtoh(updater.host.array[: splan.nbytes], states[cur].ptr, self.stream)
        self._sync()
        slots: dict[str, dict[str, np.ndarray]] = {}
        # Like the numpy optimisers: no state before the first step, none for plain SGD.
        if t_step > 0 and not (spec["name"] == "sgd" and spec["momentum"] == 0):
            for n in self.theta_names:
                slots[n] = {
                    slot_name: updater.views[f"{STATE_PREFIX}{slot_name}/{n}"].copy()
                    for slot_name in OPTIMIZER_SLOTS[spec["name"]]
                }
        return StepsResult(
            theta_out,
            _state_dict(spec, t_step, slots),
            losses,
            task_trace,
            actions,
            time.perf_counter() - t0,
            step_ms,
        )

    def _update_addresses(
        self,
        eng: _Engine,
        theta_in: DeviceArena,
        theta_out: DeviceArena,
        state_in: DeviceArena,
        state_out: DeviceArena,
        splan: ArenaPlan,
    ) -> dict[str, int]:
        theta_plan = self.plan.arena("theta")
        grads_plan = self.plan.arena("grads")
        addr: dict[str, int] = {}
        for name in eng.names:
            if name == HYPER_NAME:
                addr[name] = self._hyper.addr(HYPER_NAME)
            elif name == GRAD_SQ_NAME:
                addr[name] = self._losses.addr(GRAD_SQ_NAME)
            elif name.startswith(NEW_STATE_PREFIX):
                addr[name] = (
                    state_out.ptr + splan.slot(STATE_PREFIX + name[len(NEW_STATE_PREFIX) :]).offset
                )
            elif name.startswith(STATE_PREFIX):
                addr[name] = state_in.ptr + splan.slot(name).offset
            elif name.startswith(NEW_PREFIX) and name[len(NEW_PREFIX) :] in theta_plan:
                addr[name] = theta_out.ptr + theta_plan.slot(name[len(NEW_PREFIX) :]).offset
            elif name.startswith("grad/"):
                addr[name] = self._grads.ptr + grads_plan.slot(name).offset
            else:
                addr[name] = theta_in.ptr + theta_plan.slot(name).offset
        return addr

    # ------------------------------------------------------------------------------ reporting
    def memory_info(self) -> dict[str, int]:
        """Device bytes: our arenas, TensorRT activation memory, and the driver's free/total."""
        free, total = self.driver.mem_get_info()
        buffers = self.plan.total_bytes + sum(2 * u.plan.nbytes for u in self._updates.values())
        engines = [*self.engines.values(), *(u.engine for u in self._updates.values())]
        activations = sum(e.activation_bytes for e in engines)
        return {
            "buffers": int(buffers),
            "activations": int(activations),
            "free": free,
            "total": total,
        }

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "tensorrt": str(self.trt.__version__),
            "cuda_binding": self.driver.name,
            "gpu": self.device.name,
            "compute_capability": self.device.compute_capability,
            "integrated": str(self.device.integrated),
            "jetson": str(is_jetson()),
            "zero_copy": str(self.zero_copy),
        }
        for gname in ARTIFACT_GRAPHS:
            info[f"precision_{gname}"] = graph_recipe(gname, self.build_config, self.trt).precision
        with contextlib.suppress(Exception):
            mem = self.memory_info()
            info["device_buffers_bytes"] = str(mem["buffers"])
            info["trt_activation_bytes"] = str(mem["activations"])
        return info

    def close(self) -> None:
        """Free every device and pinned buffer and the stream; engines go with the session."""
        if getattr(self, "_closed", True):
            return
        with contextlib.suppress(Exception):
            self._sync()
        self._closed = True
        for arena in self._cut_pool:
            arena.free()
        self._cut_pool.clear()
        for updater in self._updates.values():
            updater.engine.close()
        self._updates.clear()
        for eng in self.engines.values():
            eng.close()
        for resource in reversed(self._owned):
            resource.free()
        self._owned.clear()
        with contextlib.suppress(Exception):
            self.driver.destroy_stream(self.stream)

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class _Updater:
    """A device-side optimiser: its engine and ping-pong state arenas."""

    engine: _Engine
    plan: ArenaPlan
    states: list[DeviceArena]
    host: HostArena  # staging for state upload/download
    views: dict[str, np.ndarray]


@dataclass(frozen=True)
class _TS:
    """A minimal TensorSpec for tensors the manifest does not list (update graph, banks)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _state_dict(
    spec: Mapping[str, Any], steps: int, slots: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Optimiser state in `s4t_edge.runtime.optim.Optimizer.state_dict()` format."""
    config = dict(spec)
    config["betas"] = list(config["betas"])
    return {"config": config, "steps": int(steps), "state": slots}


def _dims(value_info: Any) -> tuple[int, ...]:
    return tuple(int(d.dim_value) for d in value_info.type.tensor_type.shape.dim)


def _safe_call(method_ref: weakref.WeakMethod) -> Callable[..., None]:
    def run(*args: Any) -> None:
        method = method_ref()
        if method is None:
            for a in args:
                with contextlib.suppress(Exception):
                    a.free()
            return
        with contextlib.suppress(Exception):
            method(*args)

    return run
