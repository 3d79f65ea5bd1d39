"""Engine building (`s4t-edge build`, and the runner for missing engines) with the engine cache.

Each artifact graph (backbone, step, predict) is parsed from its file with the ONNX parser (so
external weights resolve) and built with the static shapes of the manifest; the device-side
optimiser graph (update_graphs.py) is built the same way.  Precision follows `graph_recipe`:
one build path per TensorRT family, fp16 only ever for the backbone, the step graph always fp32
with TF32 off.  Engines and the timing cache live under ``ART/engines/`` (engine_cache.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import BackendError, ConfigError
from s4t_edge.runtime.backends.tensorrt.compat import (
    import_onnx,
    import_tensorrt,
    network_flags,
    typing_path,
)
from s4t_edge.runtime.backends.tensorrt.device_memory import CudaDriver, DeviceInfo, get_driver
from s4t_edge.runtime.backends.tensorrt.engine_cache import (
    CacheHit,
    EngineCache,
    EngineKey,
    read_bytes,
    write_bytes,
)
from s4t_edge.runtime.backends.tensorrt.fp16 import convert_to_fp16
from s4t_edge.runtime.backends.tensorrt.update_graphs import (
    manifest_optimizer,
    optimizer_spec,
    update_graph_name,
    update_model_for,
)

ARTIFACT_GRAPHS = ("backbone", "step", "predict")


# ============================================================================================
# Build configuration


@dataclass(frozen=True)
class BuildConfig:
    """How `s4t-edge build` (and the runner, for missing engines) compiles the graphs."""

    fp16: bool = False  # backbone in half precision; cut tensors, step and predict stay fp32
    tf32: bool = False  # allow TF32 in backbone/predict (never in the step graph)
    workspace_mib: int | None = None  # builder scratch limit; None: TensorRT's default
    timing_cache: str | None = None  # timing cache file; None: ART/engines/timing-<env>.cache
    force: bool = False  # rebuild even when a valid engine is cached
    device: int = 0  # CUDA ordinal
    verbose: bool = False  # TensorRT's VERBOSE log

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise ConfigError("--workspace must be a positive number of MiB")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildConfig:
        # Unknown keys are dropped: an index written by an older s4t-edge may hold options that
        # no longer exist (e.g. `strongly_typed`, now decided by the TensorRT version).
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def persistent(self) -> dict[str, Any]:
        """The options a later runner should reuse (not one-off ones like --force)."""
        d = self.to_dict()
        for k in ("force", "verbose", "timing_cache"):
            d.pop(k, None)
        return d


@dataclass(frozen=True)
class GraphRecipe:
    """How one engine is built: which precision path, from which ONNX."""

    graph: str  # backbone | step | predict | update-<optimizer>
    precision: str  # fp32 | tf32 | fp16 | fp16-strongly-typed
    strongly_typed: bool
    fp16_flag: bool
    tf32: bool


def graph_recipe(graph: str, cfg: BuildConfig, trt: Any) -> GraphRecipe:
    """Precision decisions per graph: fp16 only ever applies to the backbone.

    The typing follows the TensorRT family (`typing_path`), never an option: strongly typed
    wherever the builder offers it, for every graph.
    """
    strong = typing_path(trt) == "strong"
    if graph == "backbone" and cfg.fp16:
        if not strong and not hasattr(trt.BuilderFlag, "FP16"):
            raise ConfigError(
                f"TensorRT {trt.__version__} offers neither strongly typed networks nor the FP16 "
                "builder flag; build without --fp16"
            )
        return GraphRecipe(
            graph,
            "fp16-strongly-typed" if strong else "fp16",
            strongly_typed=strong,
            fp16_flag=not strong,
            tf32=cfg.tf32,
        )
    if graph in ("backbone", "predict") and cfg.tf32:
        return GraphRecipe(graph, "tf32", strongly_typed=strong, fp16_flag=False, tf32=True)
    # step and update graphs: fp32 arithmetic, TF32 off -- they produce gradients and θ.
    return GraphRecipe(graph, "fp32", strongly_typed=strong, fp16_flag=False, tf32=False)


# ============================================================================================
# Engine building


@dataclass
class BuildReport:
    """What `build_engines` did, for the CLI and the benchmark records."""

    engines: list[dict[str, Any]]
    device: dict[str, Any]
    tensorrt: str
    timing_cache: str | None
    warnings: list[str] = field(default_factory=list)
    typing: str = "strong"  # the build path of this TensorRT (`typing_path`): strong | weak

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_artifact(artifact: Any) -> Any:
    if isinstance(artifact, str | os.PathLike):
        from s4t_edge.runtime.artifact import Artifact  # noqa: PLC0415 - sibling module

        return Artifact.load(artifact)
    return artifact


class EngineBuilder:
    """Holds the TensorRT builder state shared by all graphs of one build (logger, timing cache)."""

    def __init__(
        self, trt: Any, cfg: BuildConfig, timing_blob: bytes | None, log: Callable[[str], None]
    ):
        self.trt = trt
        self.cfg = cfg
        self.log = log
        level = trt.Logger.VERBOSE if cfg.verbose else trt.Logger.WARNING
        self.logger = trt.Logger(level)
        self.timing_blob = timing_blob
        self.timing_changed = False

    def build(
        self, onnx_path: Path, recipe: GraphRecipe, input_shapes: Mapping[str, tuple[int, ...]]
    ) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(network_flags(trt, recipe.strongly_typed))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].splitlines()[0] if errors else "unknown error"
            raise BackendError(
                f"TensorRT cannot parse the {recipe.graph} graph ({len(errors)} error(s); first: "
                f"{first}); run `s4t-edge check ART` for the TensorRT op rules and re-export"
            )
        config = builder.create_builder_config()
        if self.cfg.workspace_mib:
            config.set_memory_pool_limit(
                trt.MemoryPoolType.WORKSPACE, int(self.cfg.workspace_mib) << 20
            )
        if not recipe.tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if recipe.fp16_flag:  # weak typing: only where the builder has no strong typing
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            self._pin_outputs_fp32(network)
        self._static_shapes(builder, network, config, input_shapes, recipe.graph)
        cache = None
        try:
            cache = config.create_timing_cache(self.timing_blob or b"")
        except Exception:  # noqa: BLE001 - a cache from another TensorRT: start fresh
            self.log("timing cache unusable with this TensorRT; starting an empty one")
            cache = config.create_timing_cache(b"")
        if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
            # A cache recorded on another device or TensorRT: rebuild one rather than mix them.
            self.log("timing cache belongs to another GPU or TensorRT; starting an empty one")
            self.timing_blob = None
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(
                f"TensorRT failed to build the {recipe.graph} engine (see its log above); try a "
                "larger --workspace, or check the graph with `s4t-edge check ART`"
            )
        if cache is not None:
            new_blob = bytes(memoryview(config.get_timing_cache().serialize()))
            if new_blob and new_blob != self.timing_blob:
                self.timing_blob = new_blob
                self.timing_changed = True
        return bytes(memoryview(serialized))

    def _pin_outputs_fp32(self, network: Any) -> None:
        """Keep the cut at the backbone boundary fp32 under the weakly-typed FP16 flag."""
        trt = self.trt
        floats = (trt.float32, trt.float16)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            for j in range(layer.num_outputs):
                t = layer.get_output(j)
                if t.is_network_output and t.dtype in floats:
                    layer.set_output_type(j, trt.float32)
        for i in range(network.num_outputs):
            t = network.get_output(i)
            if t.dtype in floats:
                t.dtype = trt.float32

    def _static_shapes(
        self,
        builder: Any,
        network: Any,
        config: Any,
        shapes: Mapping[str, tuple[int, ...]],
        graph: str,
    ) -> None:
        """Pin any dynamic input dimension to the manifest's static shape (one profile)."""
        profile = None
        for i in range(network.num_inputs):
            t = network.get_input(i)
            dims = tuple(t.shape)
            if all(d >= 0 for d in dims):
                continue
            shape = shapes.get(t.name)
            if shape is None:
                raise BackendError(
                    f"{graph} input {t.name!r} has a dynamic shape and the manifest gives "
                    "none; re-export the artifact"
                )
            if profile is None:
                profile = builder.create_optimization_profile()
            profile.set_shape(t.name, shape, shape, shape)
        if profile is not None:
            config.add_optimization_profile(profile)


def build_engines(
    artifact: Any,
    config: BuildConfig | None = None,
    *,
    graphs: Sequence[str] | None = None,
    optimizers: Sequence[Mapping[str, Any]] | None = None,
    driver: CudaDriver | None = None,
    log: Callable[[str], None] | None = None,
    remember: bool = True,
) -> BuildReport:
    """Build (or reuse) the TensorRT engines of an artifact.

    Args:
        artifact: an `Artifact` or its directory.
        config: precision and builder options.
        graphs: subset of backbone/step/predict; default all three.
        optimizers: optimiser specs whose device-side update engines to build; default the
            manifest's optimiser.
        driver: CUDA driver (defaults to cuda-python / pycuda on `config.device`).
        log: line sink for progress (default: silent).
        remember: record `config` as the artifact's default for the runner.

    Raises:
        BackendError: TensorRT or CUDA missing, or a graph fails to parse or build.
    """
    trt = import_tensorrt()
    cfg = config or BuildConfig()
    say = log or (lambda _msg: None)
    art = load_artifact(artifact)
    drv = driver or get_driver(cfg.device)
    dev = drv.device_info()
    cache = EngineCache.for_artifact(art.root)
    trt_version = str(trt.__version__)
    timing_path = (
        Path(cfg.timing_cache)
        if cfg.timing_cache
        else cache.timing_cache_path(trt_version, dev.name, dev.compute_capability)
    )
    builder = EngineBuilder(trt, cfg, read_bytes(timing_path), say)
    engines: list[dict[str, Any]] = []

    def record(hit: CacheHit) -> None:
        engines.append(
            {
                "graph": hit.key.graph,
                "precision": hit.key.precision,
                "built": hit.built,
                "reason": hit.reason,
                "seconds": round(hit.seconds, 3),
                "file": str(hit.path),
                "bytes": hit.path.stat().st_size,
            }
        )
        verb = f"built in {hit.seconds:.1f} s ({hit.reason})" if hit.built else "cached"
        say(f"{hit.key.graph:<10} {hit.key.precision:<20} {verb}")

    for name in graphs or ARTIFACT_GRAPHS:
        if name not in ARTIFACT_GRAPHS:
            raise ConfigError(f"unknown graph {name!r}; choose from {', '.join(ARTIFACT_GRAPHS)}")
    specs = list(optimizers) if optimizers is not None else []
    if optimizers is None:
        manifest_opt = manifest_optimizer(art)
        if manifest_opt is not None:
            specs.append(manifest_opt)
    try:
        for name in graphs or ARTIFACT_GRAPHS:
            record(resolve_artifact_engine(art, name, cfg, trt, dev, cache, builder, say))
        for spec in specs:
            record(resolve_update_engine(art, optimizer_spec(spec), cfg, trt, dev, cache, builder))
    finally:
        # Keep what was timed even when a later graph fails: the retry is faster.
        if builder.timing_changed:
            write_bytes(timing_path, builder.timing_blob or b"")
    if remember:
        cache.set_default_build(cfg.persistent())
    return BuildReport(
        engines=engines,
        device=dev.to_dict(),
        tensorrt=trt_version,
        timing_cache=str(timing_path),
        warnings=list(cache.warnings),
        typing=typing_path(trt),
    )


def engine_key(graph: str, sha: str, precision: str, trt: Any, dev: DeviceInfo) -> EngineKey:
    return EngineKey(
        graph=graph,
        graph_sha256=sha,
        trt_version=str(trt.__version__),
        gpu_name=dev.name,
        compute_capability=dev.compute_capability,
        precision=precision,
    )


def graph_sha(art: Any, name: str) -> str:
    spec = art.graphs[name]
    sha = getattr(spec, "sha256", None)
    if sha:
        return str(sha)
    from s4t_edge.utils import sha256_file  # noqa: PLC0415

    return sha256_file(art.graph_path(name))


def resolve_artifact_engine(
    art: Any,
    name: str,
    cfg: BuildConfig,
    trt: Any,
    dev: DeviceInfo,
    cache: EngineCache,
    builder: EngineBuilder,
    say: Callable[[str], None],
) -> CacheHit:
    recipe = graph_recipe(name, cfg, trt)
    key = engine_key(name, graph_sha(art, name), recipe.precision, trt, dev)
    shapes = {s.name: tuple(int(d) for d in s.shape) for s in art.graphs[name].inputs}

    def build() -> bytes:
        path = Path(art.graph_path(name))
        if recipe.strongly_typed and recipe.precision.startswith("fp16"):
            onnx = import_onnx("convert the backbone to fp16")
            model, stats = convert_to_fp16(onnx.load(str(path)))
            say(
                f"{name:<10} fp16 rewrite: {stats['initializers']} weights, {stats['casts']} casts"
                + (f", {stats['clipped']} values clipped to ±65504" if stats["clipped"] else "")
            )
            with _scratch_dir(cache.root) as tmp:
                fp16_path = tmp / f"{name}.fp16.onnx"
                onnx.save(model, str(fp16_path))
                return builder.build(fp16_path, recipe, shapes)
        return builder.build(path, recipe, shapes)

    return cache.resolve(key, build, force=cfg.force)


def resolve_update_engine(
    art: Any,
    spec: Mapping[str, Any],
    cfg: BuildConfig,
    trt: Any,
    dev: DeviceInfo,
    cache: EngineCache,
    builder: EngineBuilder,
) -> CacheHit:
    import hashlib  # noqa: PLC0415

    gname = update_graph_name(spec["name"], spec["nesterov"])
    model = update_model_for(art, spec)
    blob = model.SerializeToString()
    key = engine_key(gname, hashlib.sha256(blob).hexdigest(), "fp32", trt, dev)
    recipe = graph_recipe(gname, cfg, trt)

    def build() -> bytes:
        with _scratch_dir(cache.root) as tmp:
            path = tmp / f"{gname}.onnx"
            path.write_bytes(blob)
            return builder.build(path, recipe, {})

    return cache.resolve(key, build, force=cfg.force)


@contextlib.contextmanager
def _scratch_dir(root: Path) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
