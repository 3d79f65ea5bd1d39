"""`s4t-edge bench`: latency, throughput and memory of S4T adaptation, against the published protocol.

Every figure a user compares must come from the same run on the same machine, so this module
measures all the contenders of one comparison *interleaved*: round after round, each backend (and
the `reference` protocol, and the published forward) gets its turn, and the speed-up ratios are
computed from those same samples -- a neighbour stealing CPU slows every contender of a round,
not only one.  The paired ratio (median over rounds of reference/backend) is reported next to the
ratio of medians for the same reason.

What is measured, per contender:

- stages (median / p90 over `stage_repeat` calls after warm-up): ``backbone`` (frozen part, once
  per batch), ``step`` (one S4T loss + ∂loss/∂θ), ``update`` (the θ optimiser step), ``predict``
  (task outputs from the cut), ``inference`` (backbone + predict on a new frame, what deployment
  without adaptation costs).  The reference protocol has ``step`` (full forward + backward + SGD on
  all parameters) and ``predict`` (eval-mode forward of the adapted model); the published forward
  has ``forward`` (the published module, reference fusion, eval, every head) and
  ``predict_published_fusion`` (main heads only, still the published fusion).
- the K-step episode through `Adapter.adapt` (preprocessing, backbone once, K steps and updates,
  guards, predict): what a device loop really pays, overheads included.
- throughput (adapted images per second) and peak memory (RSS; CUDA allocator peak for torch on a
  GPU; tegrastats/jtop power and RAM on a Jetson).

torch is imported only when a torch-based contender is asked for: ``bench ART --backend
onnxruntime`` runs on a device without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import BackendError, ConfigError
from s4t_edge.measure.memory import format_bytes, jetson_sampler, measure_memory

SCHEMA = "s4t-edge-bench"
SCHEMA_VERSION = 1
REFERENCE = "reference"
PUBLISHED_FORWARD = "published-forward"
MEMORY_MODES = ("inprocess", "isolated", "off")
FUSIONS = ("published", "factorised")
DEVICES = ("auto", "cpu", "cuda")
GRAPH_STAGES = ("backbone", "step", "update", "predict", "inference")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how (the CLI builds one; `run_bench` consumes it)."""

    steps: int = 40  # K adaptation steps per episode (published: 40)
    backends: tuple[str, ...] = ("onnxruntime",)  # θ backends to measure
    reference: bool = False  # also the published protocol and the published forward (torch)
    source: str | None = None  # run directory for torch/reference (required by them)
    warmup: int = 1  # untimed episodes per contender before timing (graph init, allocator)
    repeat: int = 5  # timed episodes per contender, interleaved round-robin
    stage_repeat: int = 10  # timed calls per stage per contender, interleaved
    threads: int | None = None  # intra-op threads for every backend (None: each library's default)
    device: str = "auto"  # "cpu" | "cuda" | "auto" (onnxruntime provider / torch device)
    seed: int = 0  # images and mask noise
    optimizer: str | None = None  # θ optimiser name (None: the manifest's)
    lr: float | None = None  # learning-rate override (timings barely depend on it)
    memory: str = "inprocess"  # "inprocess" | "isolated" (one child process each) | "off"
    reference_fusion: str = "published"  # fusion of the reference protocol's model
    jetson_interval_ms: int = 100  # tegrastats/jtop sampling period on a Jetson

    def __post_init__(self) -> None:
        from s4t_edge.runtime.manifest_check import LIMITS

        if not 0 <= self.steps <= LIMITS.max_steps:
            raise ConfigError(f"--steps must be from 0 to {LIMITS.max_steps:,}, got {self.steps}")
        if not (1 <= self.repeat <= 10_000 and 1 <= self.stage_repeat <= 100_000):
            raise ConfigError("--repeat (1-10,000) and --stage-repeat (1-100,000) are out of range")
        if self.lr is not None and not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a finite number >= 0, got {self.lr}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.memory not in MEMORY_MODES:
            raise ConfigError(
                f"unknown memory mode {self.memory!r}; choose one of {', '.join(MEMORY_MODES)}"
            )
        if self.reference_fusion not in FUSIONS:
            raise ConfigError(
                f"unknown reference fusion {self.reference_fusion!r}; "
                f"choose one of {', '.join(FUSIONS)}"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if REFERENCE in self.backends:
            raise ConfigError(
                "'reference' is not a θ backend here; pass --reference (with --source RUN_DIR) "
                "to measure the published protocol"
            )
        if not self.backends and not self.reference:
            raise ConfigError("nothing to measure: name a --backend or pass --reference")

    @property
    def with_reference(self) -> bool:
        return bool(self.reference or self.source)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backends"] = list(self.backends)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "backends" in kw:
            kw["backends"] = tuple(kw["backends"])
        return cls(**kw)


# --------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics.

    Same definition as numpy's default (``method="linear"``), written out so the JSON's p90 means
    one documented thing: position ``(n - 1) * q / 100`` in the sorted samples.
    """
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must lie in [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Median, p90, mean, min, max and the raw samples of timings in milliseconds."""
    xs = [float(v) for v in samples_ms]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median_ms": percentile(xs, 50),
        "p90_ms": percentile(xs, 90),
        "mean_ms": float(np.mean(xs)),
        "min_ms": min(xs),
        "max_ms": max(xs),
        "samples_ms": xs,
    }


def safe_ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or the denominator is not positive."""
    if num is None or den is None or not den > 0 or not math.isfinite(num):
        return None
    return float(num) / float(den)


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float | None:
    """Median over rounds of num[i] / den[i]: robust to load that drifts between rounds."""
    pairs = [a / b for a, b in zip(num, den) if b > 0]
    return percentile(pairs, 50) if pairs else None


# --------------------------------------------------------------------------- contenders
Stage = Callable[[], "Mapping[str, float] | None"]


class Contender:
    """One thing being timed: a θ backend, the reference protocol, or the published forward.

    `stages()` returns callables; a callable returning None is timed from outside (wall clock
    around the call plus `sync`), one returning {stage: ms} reports its own internal timings (the
    reference protocol times its step and predict inside one call).
    """

    name: str = ""
    kind: str = ""  # "graphs" | "protocol" | "forward" | anything a script adds
    has_episode = True
    isolatable = False  # `isolated_memory` can rebuild it in a child process from its name
    torch_cuda: Any = None  # the torch module when this contender runs on a CUDA device

    def stages(self) -> dict[str, Stage]:
        raise NotImplementedError

    def episode(self) -> None:
        raise NotImplementedError

    def between_rounds(self) -> None:
        """Untimed housekeeping between rounds (e.g. restoring weights)."""

    def sync(self) -> None:
        if self.torch_cuda is not None:
            self.torch_cuda.cuda.synchronize()

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


def _episode_setup(session: Any, images: np.ndarray, cfg: BenchConfig) -> tuple[Any, Any, Any]:
    """The episodic Adapter, preprocessed batch and one mask noise every contender times with."""
    from s4t_edge.runtime.adapter import Adapter

    adapter = Adapter(
        session, steps=cfg.steps, mode="episodic", optimizer=cfg.optimizer, lr=cfg.lr, seed=cfg.seed
    )
    rng = np.random.default_rng(cfg.seed + 1)
    return adapter, session.preprocess(images), session.mask_noise(rng)


class GraphContender(Contender):
    """A θ backend (onnxruntime, torch, tensorrt, …) through `Session` and `Adapter`."""

    kind = "graphs"
    isolatable = True

    def __init__(self, name: str, session: Any, images: np.ndarray, cfg: BenchConfig) -> None:
        from s4t_edge.runtime.optim import make_optimizer

        self.name = name
        self.session = session
        self.images = images
        self.adapter, self.x, self.noise = _episode_setup(session, images, cfg)
        self.theta = session.source_theta()
        self.cut = session.backbone(self.x)
        self.grads = session.step(self.cut, self.theta, self.noise).grads
        self.opt = make_optimizer(self.adapter.optimizer.config)
        self.scratch = {k: v.copy() for k, v in self.theta.items()}
        backend = getattr(session, "backend", None)
        dev = getattr(backend, "device", None)
        if getattr(backend, "name", "") == "torch" and str(dev).startswith("cuda"):
            import torch

            self.torch_cuda = torch

    def stages(self) -> dict[str, Stage]:
        s = self.session

        def backbone() -> None:
            s.backbone(self.x)

        def step() -> None:
            s.step(self.cut, self.theta, self.noise)

        def update() -> None:
            self.opt.step(self.scratch, self.grads)

        def predict() -> None:
            s.predict(self.cut, self.theta)

        def inference() -> None:
            s.predict(s.backbone(self.x), self.theta)

        return {
            "backbone": backbone,
            "step": step,
            "update": update,
            "predict": predict,
            "inference": inference,
        }

    def between_rounds(self) -> None:
        self.opt.reset()
        self.scratch = {k: v.copy() for k, v in self.theta.items()}

    def episode(self) -> None:
        self.adapter.adapt(self.images)

    def describe(self) -> dict[str, Any]:
        art = self.session.artifact
        return {
            **self.session.describe(),
            "optimizer": self.adapter.optimizer.config.to_dict(),
            "theta_numel": int(sum(int(np.prod(t.shape)) for t in art.theta_specs)),
            "cut_numel": int(sum(int(np.prod(t.shape)) for t in art.cut)),
        }

    def close(self) -> None:
        self.session.close()


class ReferenceContender(Contender):
    """The published protocol (all parameters, train-mode BatchNorm, SGD) via `ReferenceSession`."""

    kind = "protocol"
    isolatable = True

    def __init__(self, session: Any, images: np.ndarray, cfg: BenchConfig) -> None:

        self.name = REFERENCE
        self.session = session
        self.images = images
        self.fusion = cfg.reference_fusion
        session.model.use_reference_fusion(cfg.reference_fusion == "published")
        self.adapter, self.x, self.noise = _episode_setup(session, images, cfg)
        if str(session.device).startswith("cuda"):
            import torch

            self.torch_cuda = torch

    def stages(self) -> dict[str, Stage]:
        def step_and_predict() -> dict[str, float]:
            t = self.session.adapt_batch(self.x, [self.noise], loss_guard=None).timing
            return {"step": t["step_ms"], "predict": t["predict_ms"], "inference": t["predict_ms"]}

        return {"step": step_and_predict}

    def between_rounds(self) -> None:
        self.session.reset()

    def episode(self) -> None:
        self.adapter.adapt(self.images)

    def describe(self) -> dict[str, Any]:
        return {
            **self.session.describe(),
            "fusion": self.fusion,
            "optimizer": self.adapter.optimizer.config.to_dict(),
        }


class PublishedForwardContender(Contender):
    """The published module's inference forward: reference fusion, eval mode, every head."""

    kind = "forward"
    has_episode = False
    isolatable = True

    def __init__(self, run_dir: Path, images: np.ndarray, artifact: Any, cfg: BenchConfig) -> None:
        from s4t_edge.runtime.backends.torch_backend import import_torch, resolve_device
        from s4t_edge.runtime.session import prepare_images
        from s4t_edge.train.rundir import load_run

        torch = import_torch()
        self._torch = torch
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.name = PUBLISHED_FORWARD
        self.device = resolve_device(torch, None if cfg.device == "auto" else cfg.device)
        model = load_run(run_dir).model.float().to(self.device).eval()
        model.set_bn_mode(None)
        model.use_reference_fusion(True)
        self.model = model
        self.run_dir = run_dir
        x = prepare_images(artifact, images)
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.noise = torch.rand(*model.mask_noise_shape(x.shape[0]), generator=gen).to(self.device)
        if self.device.type == "cuda":
            self.torch_cuda = torch

    def stages(self) -> dict[str, Stage]:
        torch, m = self._torch, self.model

        def forward() -> None:
            with torch.no_grad():
                m(self.x, self.noise)

        def predict_published_fusion() -> None:
            with torch.no_grad():
                m.predict(self.x)

        return {"forward": forward, "predict_published_fusion": predict_published_fusion}

    def episode(self) -> None:  # memory probe: one forward
        self.stages()["forward"]()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "torch",
            "device": str(self.device),
            "torch": self._torch.__version__,
            "threads": self._torch.get_num_threads(),
            "source_run": str(self.run_dir),
            "fusion": "published",
            "params": int(sum(p.numel() for p in self.model.parameters())),
        }


# --------------------------------------------------------------------------- timing loops
def _time_call(fn: Stage, sync: Callable[[], None]) -> tuple[float, Mapping[str, float] | None]:
    t0 = time.perf_counter()
    out = fn()
    sync()
    return (time.perf_counter() - t0) * 1e3, out


def time_stages(
    contenders: Sequence[Contender], rounds: int, warmup: int = 1, switch_pause_s: float = 0.02
) -> dict[str, dict[str, list[float]]]:
    """Interleaved per-stage samples: {contender: {stage: [ms, ...]}} (warm-up rounds dropped).

    Stage calls are short, so the thread pool of the contender that ran just before (OpenMP and
    ONNX Runtime workers spin-wait after their work) would still be holding the cores: each switch
    pauses `switch_pause_s` and makes one untimed call before the timed ones.
    """
    samples: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    for r in range(warmup + rounds):
        order = list(contenders)
        k = r % max(len(order), 1)
        order = order[k:] + order[:k]  # rotate: no contender always runs right after another
        for c in order:
            stages = c.stages()
            if len(contenders) > 1 and stages:
                time.sleep(switch_pause_s)
                _time_call(next(iter(stages.values())), c.sync)
            for stage, fn in stages.items():
                ms, inner = _time_call(fn, c.sync)
                if r < warmup:
                    continue
                if inner is None:
                    samples[c.name].setdefault(stage, []).append(ms)
                else:
                    for name, value in inner.items():
                        samples[c.name].setdefault(name, []).append(float(value))
            c.between_rounds()
    return samples


def time_episodes(
    contenders: Sequence[Contender], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Interleaved episode wall times: {contender: [ms per round]} (index i = round i)."""
    out: dict[str, list[float]] = {c.name: [] for c in contenders if c.has_episode}
    runners = [c for c in contenders if c.has_episode]
    for r in range(warmup + rounds):
        k = r % max(len(runners), 1)
        for c in runners[k:] + runners[:k]:
            ms, _ = _time_call(c.episode, c.sync)
            if r >= warmup:
                out[c.name].append(ms)
    return out


# --------------------------------------------------------------------------- orchestration
def load_images(artifact: Any, seed: int, data: str | os.PathLike[str] | None = None) -> np.ndarray:
    """One static batch of uint8 frames: from `data` (any `--data` spec, `s4t_edge.data.open_data`,
    fitted to the artifact's input under its protocol) or a synthetic foggy scene."""
    n = artifact.batch
    h, w = artifact.input_size
    if data is not None:
        from s4t_edge.data import open_data

        ds = open_data(data, artifact.manifest.get("protocol"), size=(h, w))
        if tuple(ds.size) != (h, w):
            raise ConfigError(
                f"--data images are {ds.size[0]}x{ds.size[1]}, the artifact takes {h}x{w}; "
                f"use data at that size (s4t-edge data synth --size {h})"
            )
        img = ds.take(np.arange(n) % len(ds)).image
        return np.ascontiguousarray(img)
    if h == w:
        from s4t_edge.data import synth

        return synth("fog", n, h, seed).image
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def backend_options(backend: str, cfg: BenchConfig) -> dict[str, Any]:
    """The `load(...)` options that apply `cfg`'s device and thread settings to one backend."""
    opts: dict[str, Any] = {}
    if backend == "onnxruntime":
        if cfg.device != "auto":
            opts["providers"] = [cfg.device]
        if cfg.threads:
            opts["intra_op_threads"] = cfg.threads
    elif backend in ("torch", REFERENCE):
        opts["device"] = cfg.device
        if cfg.threads:
            opts["threads"] = cfg.threads
        if cfg.source:
            opts["source"] = cfg.source
    return opts


def build_contenders(
    artifact: Any, images: np.ndarray, cfg: BenchConfig, progress: Callable[[str], None]
) -> list[Contender]:
    """Load every backend asked for (and the reference pair), ready to time."""
    from s4t_edge.runtime.session import load

    out: list[Contender] = []
    for b in cfg.backends:
        progress(f"loading backend {b}")
        session = load(artifact, backend=b, **backend_options(b, cfg))
        out.append(GraphContender(b, session, images, cfg))
    if cfg.with_reference:
        from s4t_edge.runtime.backends.torch_backend import source_run_dir

        progress("loading the published protocol (reference) and the published forward")
        ref = load(artifact, backend=REFERENCE, **backend_options(REFERENCE, cfg))
        out.append(ReferenceContender(ref, images, cfg))
        out.append(
            PublishedForwardContender(source_run_dir(artifact, cfg.source), images, artifact, cfg)
        )
    return out


def thread_settings(cfg: BenchConfig) -> dict[str, Any]:
    """Every knob that changes a CPU figure, recorded next to it."""
    info: dict[str, Any] = {
        "requested": cfg.threads,
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        info["affinity"] = None
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
        info["torch_interop_threads"] = sys.modules["torch"].get_num_interop_threads()
    try:
        info["load_avg_1min"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        pass
    return info


def compute_ratios(results: Mapping[str, Mapping[str, Any]], steps: int) -> dict[str, Any]:
    """Speed-ups of every θ backend over the reference protocol and the published forward.

    All numbers come from `results` (the same run): ``episode`` = reference episode median / backend
    episode median; ``episode_paired`` = median of per-round ratios; ``step`` = reference step /
    (backend step + update); ``predict_vs_published_forward`` = published forward / backend
    inference (backbone + predict: both start from an image).
    """

    def med(name: str, stage: str) -> float | None:
        st = (results.get(name) or {}).get("stages", {}).get(stage) or {}
        return st.get("median_ms")

    ref = results.get(REFERENCE)
    fwd = results.get(PUBLISHED_FORWARD)
    out: dict[str, Any] = {}
    for name, res in results.items():
        if res.get("kind") != "graphs":
            continue
        r: dict[str, Any] = {}
        ep = res.get("episode") or {}
        if ref is not None:
            ref_ep = ref.get("episode") or {}
            r["episode"] = safe_ratio(ref_ep.get("median_ms"), ep.get("median_ms"))
            r["episode_paired"] = paired_ratio(
                ref_ep.get("samples_ms") or [], ep.get("samples_ms") or []
            )
            step, update = med(name, "step"), med(name, "update")
            r["step"] = safe_ratio(
                med(REFERENCE, "step"), None if step is None else step + (update or 0.0)
            )
            r["predict_vs_reference_predict"] = safe_ratio(
                med(REFERENCE, "predict"), med(name, "inference")
            )
        if fwd is not None:
            r["predict_vs_published_forward"] = safe_ratio(
                med(PUBLISHED_FORWARD, "forward"), med(name, "inference")
            )
            r["predict_vs_published_predict"] = safe_ratio(
                med(PUBLISHED_FORWARD, "predict_published_fusion"), med(name, "inference")
            )
        if r:
            out[name] = r
    return out


def run_bench(
    artifact_dir: str | os.PathLike[str],
    cfg: BenchConfig = BenchConfig(),
    *,
    data: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    contenders: Sequence[Contender] | None = None,
) -> dict[str, Any]:
    """Measure the contenders of `cfg` on one batch and return the bench JSON document.

    Args:
        artifact_dir: exported artifact.
        cfg: what to measure.
        data: optional .npz whose first images form the batch (default: synthetic fog).
        progress: called with short status lines.
        contenders: extra, already built contenders (benchmark scripts add device-resident
            variants here); they are timed in the same rounds.
    """
    from s4t_edge.runtime.artifact import Artifact

    say = progress or (lambda msg: None)
    art = Artifact.load(artifact_dir)
    images = load_images(art, cfg.seed, data)
    built = build_contenders(art, images, cfg, say) + list(contenders or [])
    try:
        return measure(built, cfg, art, say)
    finally:
        for c in built:
            c.close()


def measure(
    contenders: Sequence[Contender],
    cfg: BenchConfig,
    artifact: Any | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """Time `contenders` interleaved and assemble the bench document (see `run_bench`).

    Args:
        contenders: what to time (all in the same rounds).
        cfg: rounds, steps, memory mode.
        artifact: the artifact the contenders run (recorded; its batch gives throughput).
        progress: status lines.
        batch: images per episode when there is no artifact (scripts timing models directly).
    """
    say = progress or (lambda msg: None)
    say(f"timing stages ({cfg.stage_repeat} rounds, interleaved)")
    stage_samples = time_stages(contenders, cfg.stage_repeat, warmup=1)
    say(f"timing {cfg.steps}-step episodes ({cfg.warmup} warm-up + {cfg.repeat} rounds)")
    episodes = time_episodes(contenders, cfg.repeat, warmup=cfg.warmup)
    if artifact is not None:
        batch = artifact.batch

    results: dict[str, dict[str, Any]] = {}
    for c in contenders:
        res: dict[str, Any] = {
            "kind": c.kind,
            "describe": c.describe(),
            "stages": {k: summarize(v) for k, v in stage_samples[c.name].items()},
        }
        if c.has_episode:
            ep = summarize(episodes[c.name])
            ep["steps"] = cfg.steps
            res["episode"] = ep
            if batch and ep.get("median_ms"):
                res["throughput"] = {"adapted_images_per_s": batch / (ep["median_ms"] / 1e3)}
        inf = res["stages"].get("inference") or res["stages"].get("forward") or {}
        if batch and inf.get("median_ms"):
            res.setdefault("throughput", {})["inference_images_per_s"] = batch / (
                inf["median_ms"] / 1e3
            )
        results[c.name] = res

    if cfg.memory != "off":
        say(f"memory ({cfg.memory})")
        for c in contenders:
            if cfg.memory == "isolated" and artifact is not None and c.isolatable:
                results[c.name]["memory"] = isolated_memory(artifact.root, c.name, cfg)
            else:
                with measure_memory(c.torch_cuda) as m:
                    c.episode()
                    c.sync()
                results[c.name]["memory"] = {"mode": "inprocess", **m.to_dict()}

    sampler_probe = jetson_sampler(cfg.jetson_interval_ms)
    if sampler_probe is not None:
        say("sampling Jetson power and memory during episodes")
        for c in contenders:
            sampler = jetson_sampler(cfg.jetson_interval_ms)
            assert sampler is not None
            with sampler:
                for _ in range(cfg.repeat):
                    c.episode()
                    c.sync()
            summary = sampler.result.summary()
            if summary.get("energy_j") is not None and c.has_episode:
                summary["energy_per_episode_j"] = summary["energy_j"] / cfg.repeat
            results[c.name]["jetson"] = summary

    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(),
        "threads": thread_settings(cfg),
        "results": results,
        "ratios": compute_ratios(results, cfg.steps),
    }
    if artifact is not None:
        m = artifact.manifest
        doc["artifact"] = {
            "path": str(artifact.root),
            "preset": (m.get("model") or {}).get("preset"),
            "backbone": (m.get("model") or {}).get("backbone"),
            "scope": m.get("scope"),
            "bn_stats": m.get("bn_stats"),
            "batch": artifact.batch,
            "input_size": list(artifact.input_size),
            "theta_numel": int(sum(int(np.prod(t.shape)) for t in artifact.theta_specs)),
            "cut_numel": int(sum(int(np.prod(t.shape)) for t in artifact.cut)),
        }
    from s4t_edge.envinfo import collect_env

    doc["env"] = collect_env(include_torch="torch" in sys.modules)
    return doc


# --------------------------------------------------------------------------- isolated memory
def isolated_memory(artifact_dir: Path, name: str, cfg: BenchConfig) -> dict[str, Any]:
    """Peak memory of one contender in a fresh child process (nothing else loaded there).

    In-process figures carry every other contender's weights and torch itself; a device running
    only the onnxruntime backend never imports torch, and the child shows what it really holds.
    """
    spec = {"artifact": str(artifact_dir), "name": name, "config": cfg.to_dict()}
    cmd = [sys.executable, "-m", "s4t_edge.measure.bench", "--probe", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"mode": "isolated", "error": "memory probe timed out"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"mode": "isolated", "error": f"memory probe failed: {tail[:300]}"}
    return {"mode": "isolated", **json.loads(lines[-1])}


def _probe(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Child side of `isolated_memory`: load one contender, warm up, measure one episode."""
    from s4t_edge.measure.memory import current_rss, peak_rss
    from s4t_edge.runtime.artifact import Artifact

    rss_start = current_rss()
    cfg = BenchConfig.from_dict(spec["config"])
    name = spec["name"]
    art = Artifact.load(spec["artifact"])
    images = load_images(art, cfg.seed)
    if name in (REFERENCE, PUBLISHED_FORWARD):
        cfg = BenchConfig.from_dict({**cfg.to_dict(), "backends": (), "reference": True})
        contenders = build_contenders(art, images, cfg, lambda m: None)
        c = next(x for x in contenders if x.name == name)
    else:
        cfg = BenchConfig.from_dict({**cfg.to_dict(), "backends": (name,), "reference": False})
        cfg = BenchConfig.from_dict({**cfg.to_dict(), "source": None})
        c = build_contenders(art, images, cfg, lambda m: None)[0]
    rss_loaded = current_rss()
    c.episode()  # warm-up: lazy initialisation belongs to the process peak, not the episode
    c.sync()
    process_peak = peak_rss()
    with measure_memory(c.torch_cuda) as m:
        c.episode()
        c.sync()
    return {
        "rss_start_bytes": rss_start,
        "rss_loaded_bytes": rss_loaded,
        "process_peak_bytes": max(process_peak or 0, m.rss_peak or 0) or None,
        **m.to_dict(),
        "torch_imported": "torch" in sys.modules,
    }


# --------------------------------------------------------------------------- reporting
def _ms(st: Mapping[str, Any] | None) -> str:
    if not st or st.get("median_ms") is None:
        return "-"
    return f"{st['median_ms']:.2f} / {st['p90_ms']:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def format_table(doc: Mapping[str, Any], markdown: bool = False) -> str:
    """The bench document as a readable table (plain text, or markdown for READMEs)."""
    results = doc["results"]
    stage_cols = ("backbone", "step", "update", "predict", "inference")
    head = ["contender", *[f"{s} ms" for s in stage_cols], f"episode K={doc['config']['steps']} ms"]
    head += ["adapted img/s", "peak mem"]
    rows: list[list[str]] = []
    for name, res in results.items():
        st = res.get("stages", {})
        cells = [name]
        for s in stage_cols:
            if name == PUBLISHED_FORWARD and s == "inference":
                cells.append(_ms(st.get("forward")))
            elif name == PUBLISHED_FORWARD and s == "predict":
                cells.append(_ms(st.get("predict_published_fusion")))
            else:
                cells.append(_ms(st.get(s)))
        cells.append(_ms(res.get("episode")))
        tp = (res.get("throughput") or {}).get("adapted_images_per_s")
        cells.append("-" if tp is None else f"{tp:.1f}")
        mem = res.get("memory") or {}
        if mem.get("cuda_peak_allocated_bytes") is not None:
            cells.append(format_bytes(mem["cuda_peak_allocated_bytes"]) + " (cuda)")
        elif mem.get("rss_peak_bytes") is not None:
            cells.append(format_bytes(mem["rss_peak_bytes"]))
        else:
            cells.append("-")
        rows.append(cells)
    lines = [_render(head, rows, markdown)]
    ratios = doc.get("ratios") or {}
    if ratios:
        head2 = [
            "backend",
            "episode speed-up",
            "paired",
            "step speed-up",
            "predict vs published forward",
        ]
        rows2 = [
            [
                name,
                _x(r.get("episode")),
                _x(r.get("episode_paired")),
                _x(r.get("step")),
                _x(r.get("predict_vs_published_forward")),
            ]
            for name, r in ratios.items()
        ]
        lines += ["", _render(head2, rows2, markdown)]
    art = doc.get("artifact")
    th = doc.get("threads") or {}
    where = (
        f"artifact {art.get('preset')} scope {art.get('scope')} batch {art.get('batch')} "
        f"{art.get('input_size')}; θ {art.get('theta_numel')} values; "
        if art
        else ""
    )
    lines += [
        "",
        f"median / p90 ms; {where}threads {th.get('requested') or 'default'} "
        f"(cpus {th.get('affinity')}, load {th.get('load_avg_1min', float('nan')):.1f}); "
        f"{doc['config']['repeat']} episodes, {doc['config']['stage_repeat']} stage rounds",
    ]
    return "\n".join(lines)


def _render(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Strict JSON (NaN/inf -> null), written atomically."""
    from s4t_edge.utils import write_json as _write

    _write(path, _clean(doc))


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _main(argv: list[str]) -> int:
    """`python -m s4t_edge.measure.bench --probe SPEC`: the isolated memory probe."""
    if len(argv) == 2 and argv[0] == "--probe":
        try:
            print(json.dumps(_clean(_probe(json.loads(argv[1])))))
        except (BackendError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m s4t_edge.measure.bench --probe SPEC_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
