"""`s4t-edge export`: a trained run -> an artifact directory (DESIGN.md §3.1).

The artifact is written into a temporary sibling directory and renamed into place at the end, so
an interrupted or failed export never leaves a half-written artifact, and an existing artifact
is replaced only when asked (and only after the new one has been validated).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import ConfigError, ExportError, OutputPathError
from s4t_edge.export.scopes import DEFAULT_SCOPE

BN_STATS = ("batch", "running")
ARTIFACT_FORMAT = "s4t-edge-artifact"
ARTIFACT_VERSION = 1


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how."""

    scope: str = DEFAULT_SCOPE  # which parameters form θ (see s4t_edge.export.scopes)
    batch: int = 8  # static batch size of every graph (the published protocol adapts on 8 images)
    bn_stats: str = "batch"  # BatchNorm statistics in all graphs: "batch" (published) or "running"
    add_adapters: tuple[str, ...] = ()  # backbone stages that get zero-initialised adapters
    opset: int = 18  # ONNX opset (TensorRT 10.3 parses ≤ 20)
    validate: bool = True  # compare every graph with PyTorch before finishing
    seed: int = 0  # seed of the parity images and mask noise
    optimizer: str | None = None  # default test-time optimiser in the manifest (None: the run's)
    lr: float | None = None  # its learning rate (None: the run's S4T config, published 2e-5)
    steps: int | None = None  # default S4T steps per batch (None: the run's, published 40)

    def __post_init__(self) -> None:
        if self.bn_stats not in BN_STATS:
            raise ConfigError(
                f"--bn-stats must be one of {', '.join(BN_STATS)}, got {self.bn_stats!r}"
            )
        if not 1 <= int(self.batch) <= 1024:
            raise ConfigError(f"--batch must be between 1 and 1024, got {self.batch}")
        if not 13 <= self.opset <= 20:
            raise ConfigError(
                f"--opset must be between 13 and 20 (TensorRT 10.3 parses ≤ 20), got {self.opset}"
            )
        self.runtime_defaults({})  # checks --optimizer/--lr/--steps before any work

    def runtime_defaults(self, s4t: dict[str, Any]) -> dict[str, Any]:
        """The run's S4T settings with this export's optimiser/lr/steps choices applied."""
        out = dict(s4t)
        opt = dict(out.get("optimizer", {}))
        if self.optimizer is not None:
            if self.optimizer not in ("sgd", "adam"):
                raise ConfigError(f"--optimizer must be sgd or adam, got {self.optimizer!r}")
            opt["name"] = self.optimizer
        if self.lr is not None:
            if not self.lr > 0:
                raise ConfigError(f"--lr must be positive, got {self.lr}")
            opt["lr"] = float(self.lr)
        out["optimizer"] = opt
        if self.steps is not None:
            if self.steps < 1:
                raise ConfigError(f"--steps must be at least 1, got {self.steps}")
            out["steps"] = int(self.steps)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["add_adapters"] = list(self.add_adapters)
        return d


@dataclass
class ExportResult:
    """What an export produced (for the CLI summary and the tests)."""

    out_dir: Path
    manifest: dict[str, Any]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{str(out)!r} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputPathError(
            f"{str(out)!r} is not empty; pass --overwrite to replace it or choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent)
    except OSError as e:
        raise OutputPathError(
            f"cannot write next to {str(out)!r}: {e.strerror}; choose a writable --out"
        ) from None
    shutil.rmtree(probe, ignore_errors=True)


def parity_batch(model_cfg, batch: int, seed: int):
    """Real (synthetic-scene) images for parity checks: uint8 NHWC and the preprocessed tensor."""
    import numpy as np

    from s4t_edge.data import preprocess, synth

    h, w = model_cfg.input_size
    ds = synth("source", batch, (h, w) if h != w else h, seed)
    img = ds.image
    x = preprocess(img, model_cfg.mean, model_cfg.std)
    return img, np.ascontiguousarray(x, dtype=np.float32)


def export_model(
    model,
    s4t_cfg,
    out_dir: str | Path,
    cfg: ExportConfig = ExportConfig(),
    source_run: str | None = None,
    overwrite: bool = False,
    progress=None,
) -> ExportResult:
    """Export an in-memory model (see `export_run` for the run-directory front end)."""
    import torch

    from s4t_edge.export.manifest import build_manifest, finalize_manifest
    from s4t_edge.export.onnx_graphs import export_graph
    from s4t_edge.export.partition import build_partition
    from s4t_edge.export.validate import reference_outputs, run_checks, save_parity

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    model = model.float().eval()
    if cfg.add_adapters:
        model.add_adapters(list(cfg.add_adapters))

    from s4t_edge.export.scopes import select_theta

    select_theta(model, cfg.scope)  # a bad scope fails here, before any work or output
    say(f"tracing the test-time step (scope {cfg.scope}, batch {cfg.batch}, bn {cfg.bn_stats})")
    t = time.perf_counter()
    part = build_partition(model, cfg.scope, cfg.batch, cfg.bn_stats, s4t_cfg, seed=cfg.seed)
    timings["trace_s"] = time.perf_counter() - t

    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent if str(out.parent) else ".")
    )
    try:
        h, w = model.config.input_size
        image = torch.zeros(cfg.batch, 3, h, w)
        noise_shape = tuple(model.mask_noise_shape(cfg.batch))
        noise = torch.zeros(noise_shape)
        cut_ex = {n: torch.zeros(s) for n, s in part.cut_shapes.items()}
        theta = part.source_theta()

        t = time.perf_counter()
        say("writing backbone.onnx")
        protos = {}
        protos["backbone"] = export_graph(
            part.backbone_gm, [image], ["image"], part.cut_names, tmp / "backbone.onnx", cfg.opset
        )
        say("writing step.onnx")
        ins, outs = part.step_io()
        step_args = (
            [cut_ex[n] for n in part.step_cut] + [theta[n] for n in part.theta_names] + [noise]
        )
        protos["step"] = export_graph(
            part.step_gm, step_args, ins, outs, tmp / "step.onnx", cfg.opset
        )
        say("writing predict.onnx")
        ins, outs = part.predict_io()
        pred_args = [cut_ex[n] for n in part.predict_cut] + [theta[n] for n in part.predict_theta]
        protos["predict"] = export_graph(
            part.predict_gm, pred_args, ins, outs, tmp / "predict.onnx", cfg.opset
        )
        timings["onnx_s"] = time.perf_counter() - t

        from safetensors.numpy import save_file

        save_file(
            {n: theta[n].detach().cpu().numpy() for n in part.theta_names},
            str(tmp / "theta.safetensors"),
            metadata={"scope": cfg.scope},
        )

        t = time.perf_counter()
        say("computing PyTorch references on real images")
        ref = reference_outputs(model, part, cfg, s4t_cfg)
        save_parity(tmp / "parity.safetensors", ref)
        timings["reference_s"] = time.perf_counter() - t

        manifest = build_manifest(
            model=model,
            s4t_cfg=s4t_cfg,
            part=part,
            cfg=cfg,
            protos=protos,
            root=tmp,
            source_run=source_run,
        )
        finalize_manifest(tmp, manifest)
        if cfg.validate:
            t = time.perf_counter()
            say("validating: onnx.checker, TensorRT rules, ONNX Runtime vs PyTorch")
            report = run_checks(tmp)
            timings["validate_s"] = time.perf_counter() - t
            if not report.ok:
                raise ExportError(f"validation failed: {report.first_failure()}")
            manifest["parity"] = report.parity
            manifest["trt_findings"] = report.trt_findings
            finalize_manifest(tmp, manifest)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    return ExportResult(out_dir=out, manifest=manifest, seconds=seconds, timings=timings)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished artifact over `out`; an old artifact is removed only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time() * 1000)}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig = ExportConfig(),
    overwrite: bool = False,
    progress=None,
) -> ExportResult:
    """Export a trained run directory (``model.safetensors`` + ``config.json``)."""
    from s4t_edge.train.rundir import load_run

    run = load_run(run_dir)
    return export_model(
        run.model,
        run.s4t_config,
        out_dir,
        cfg,
        source_run=str(Path(run_dir).resolve()),
        overwrite=overwrite,
        progress=progress,
    )
