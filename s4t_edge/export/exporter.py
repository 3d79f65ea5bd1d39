"""`s4t-edge export`: a trained run -> an artifact directory (DESIGN.md §3.1).

The artifact is written into a temporary sibling directory and renamed into place at the end, so
an interrupted or failed export never leaves a half-written artifact, and an existing artifact
is replaced only when asked (and only after the new one has been validated).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import ArtifactError, ConfigError, ExportError, OutputPathError
from s4t_edge.export.scopes import DEFAULT_SCOPE
from s4t_edge.outputs import check_output, input_entry
from s4t_edge.utils import current_umask, fsync_dir

BN_STATS = ("batch", "running", "mix")
ARTIFACT_FORMAT = "s4t-edge-artifact"
ARTIFACT_VERSION = 1
_OWNER = ".s4t-export-owner"  # pid of the export building a temporary directory


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how."""

    scope: str = DEFAULT_SCOPE  # which parameters form θ (see s4t_edge.export.scopes)
    batch: int = 8  # static batch size of every graph (the published protocol adapts on 8 images)
    # BatchNorm statistics in all graphs: "mix" -- a graph input α chosen per batch on the
    # device (0 = running, 1 = batch; see runtime.policy) --, "batch" (published) or "running".
    # "mix" is the default because batch statistics hurt where the content, not the pixels,
    # changed (benchmarks/adaptation_study.py); the policy tells the two apart per batch
    bn_stats: str = "mix"
    objective: str = "s4t"  # what the step minimises: "s4t" (published) or "entropy" (tent)
    # task weighting of the step: "published" (λ·w_t^p in the graph) or "first-step" (a step
    # input task_weights [T]; the runtime sets 1/part_t at the batch's first step)
    task_weighting: str = "published"
    # label-free rules recorded as the artifact's default (runtime.policy.AdaptPolicy fields)
    policy: Mapping[str, Any] | None = None
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
        from s4t_edge.runtime.policy import OBJECTIVES, AdaptPolicy

        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        from s4t_edge.runtime.manifest_check import TASK_WEIGHTINGS

        if self.task_weighting not in TASK_WEIGHTINGS:
            raise ConfigError(
                f"--task-weighting must be one of {', '.join(TASK_WEIGHTINGS)}, "
                f"got {self.task_weighting!r}"
            )
        if self.task_weighting == "first-step" and self.objective == "entropy":
            # tent has one term (semseg): normalising it would only rescale the learning rate
            raise ConfigError(
                "--task-weighting first-step needs --objective s4t (entropy has a single term)"
            )
        AdaptPolicy.from_dict(self.policy)
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
            if not (self.lr > 0 and math.isfinite(self.lr)):
                raise ConfigError(f"--lr must be a finite positive number, got {self.lr}")
            opt["lr"] = float(self.lr)
        out["optimizer"] = opt
        if self.steps is not None:
            from s4t_edge.runtime.manifest_check import LIMITS

            if not 1 <= self.steps <= LIMITS.max_steps:
                raise ConfigError(
                    f"--steps must be between 1 and {LIMITS.max_steps:,}, got {self.steps}"
                )
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


def _check_out_dir(out: Path, overwrite: bool, source_run: str | None = None) -> None:
    """Refuse, before any work, every --out that an export could not safely write.

    `--overwrite` replaces an s4t-edge artifact (or fills an empty directory), never anything
    else: the swap later touches only the files the old manifest lists.
    """
    extra = [input_entry(source_run, "the run directory")] if source_run else []
    check_output(out, "--out", extra=extra)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputPathError(f"{str(out)!r} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        owned = artifact_files(out)
        if owned is None:
            why = (
                "its manifest.json is not a readable s4t-edge manifest"
                if (out / "manifest.json").exists()
                else "it holds no s4t-edge artifact"
            )
            raise OutputPathError(
                f"{str(out)!r} is not empty and {why}; --overwrite only replaces an artifact, "
                "so nothing there was touched -- choose another --out (or empty it yourself)"
            )
        if not overwrite:
            raise OutputPathError(
                f"{str(out)!r} already holds an artifact; pass --overwrite to replace it or "
                "choose another --out"
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


def artifact_files(out: Path) -> list[str] | None:
    """The files an existing artifact in `out` owns, or None when `out` holds no artifact.

    The listing comes from its manifest (or, after an interrupted replacement, the old manifest
    kept aside); only plain names inside `out` count, so a hostile manifest cannot make
    `--overwrite` delete anything outside the artifact.
    """
    import json

    from s4t_edge.runtime.artifact import MANIFEST, REPLACING
    from s4t_edge.runtime.manifest_check import FORMAT, safe_file_name

    owned: list[str] = []
    found = False
    for name in (MANIFEST, REPLACING):
        path = out / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            continue
        found = True
        owned.append(name)
        if (out / "manifest.sig").is_file():
            owned.append("manifest.sig")  # signs the manifest being replaced: stale after
        listed = m.get("files") if isinstance(m.get("files"), dict) else {}
        for f in listed:
            try:
                owned.append(safe_file_name(f, "files"))
            except ArtifactError:
                continue  # never follow a name that could leave the directory
    return sorted(set(owned)) if found else None


def _mark_owned(tmp: Path) -> None:
    """Record who builds `tmp`, so a later export can tell a stale one from a live one."""
    (tmp / _OWNER).write_text(f"{os.getpid()}\n")


def clean_stale_exports(out: Path) -> list[Path]:
    """Remove `.OUT.export-*` directories left by exports that were killed.

    Only directories with our owner file whose process is gone are removed; anything else that
    happens to match the pattern is left alone.
    """
    parent = out.parent if str(out.parent) else Path(".")
    removed = []
    for d in parent.glob(f".{out.name}.export-*"):
        owner = d / _OWNER
        if d.is_symlink() or not d.is_dir() or not owner.is_file():
            continue
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_model(
    model,
    s4t_cfg,
    out_dir: str | Path,
    cfg: ExportConfig = ExportConfig(),
    source_run: str | None = None,
    overwrite: bool = False,
    progress=None,
    key: bytes | None = None,
) -> ExportResult:
    """Export an in-memory model (see `export_run` for the run-directory front end).

    With a signing `key`, the manifest is signed (`manifest.sig`) before the artifact is moved
    into place.
    """
    import torch

    from s4t_edge.export.manifest import build_manifest, finalize_manifest
    from s4t_edge.export.onnx_graphs import export_graph
    from s4t_edge.export.partition import build_partition
    from s4t_edge.export.validate import reference_outputs, run_checks, save_parity

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    _check_out_dir(out, overwrite, source_run)
    for d in clean_stale_exports(out):
        say(f"removed {d.name}, left by an export that was killed")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    model = model.float().eval()
    if cfg.add_adapters:
        model.add_adapters(list(cfg.add_adapters))

    from s4t_edge.export.scopes import select_theta

    select_theta(model, cfg.scope)  # a bad scope fails here, before any work or output
    say(f"tracing the test-time step (scope {cfg.scope}, batch {cfg.batch}, bn {cfg.bn_stats})")
    t = time.perf_counter()
    part = build_partition(
        model,
        cfg.scope,
        cfg.batch,
        cfg.bn_stats,
        s4t_cfg,
        seed=cfg.seed,
        objective=cfg.objective,
        task_weighting=cfg.task_weighting,
    )
    timings["trace_s"] = time.perf_counter() - t

    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent if str(out.parent) else ".")
    )
    try:
        _mark_owned(tmp)
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
            part.backbone_gm,
            [image] + [torch.ones(1) for _ in part.controls],
            ["image", *part.controls],
            part.cut_names + part.stats,
            tmp / "backbone.onnx",
            cfg.opset,
        )
        say("writing step.onnx")
        ins, outs = part.step_io()
        step_args = (
            [cut_ex[n] for n in part.step_cut] + [theta[n] for n in part.theta_names] + [noise]
        )
        if part.task_weights:
            step_args.append(torch.ones(len(part.task_names)))
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
        if key is not None:
            from s4t_edge.runtime.signing import sign

            sign(tmp / "manifest.json", key)
        (tmp / _OWNER).unlink()
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, FileNotFoundError):
            raise
        raise OutputPathError(
            f"cannot write the artifact {str(out)!r}: {e.strerror or e}; free space (or raise "
            "the file-size limit) and export again -- nothing at --out was changed"
        ) from None
    except OutputPathError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputPathError(f"{e}; the export was abandoned, nothing at --out changed") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _swap_into_place(tmp, out)
    except OutputPathError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputPathError(
            f"replacing the artifact in {str(out)!r} failed midway ({e.strerror or e}); it is "
            "marked as interrupted -- run the same export with --overwrite again"
        ) from None
    seconds = time.perf_counter() - t0
    return ExportResult(out_dir=out, manifest=manifest, seconds=seconds, timings=timings)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished artifact in `tmp` to `out`, touching only artifact files there.

    A new or empty `out` is a single rename.  Over an existing artifact, its manifest is first
    set aside (so a crash in between leaves a directory that `load` refuses with a clear message
    and `export --overwrite` recognises), the new files are renamed in, the old artifact's
    files the new one does not have are removed, and the new manifest lands last.  Files the old
    manifest does not list (engines/, the user's own) are never touched.
    """
    from s4t_edge.runtime.artifact import MANIFEST, REPLACING

    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; an artifact is shared
    if not out.exists():
        tmp.rename(out)
        fsync_dir(out.parent if str(out.parent) else ".")
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = artifact_files(out) or []
    new = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
    for name in new:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            raise OutputPathError(
                f"{str(target)!r} is a directory where the artifact puts a file; move it away "
                "and export again (nothing was changed)"
            )
    if (out / MANIFEST).is_file() and not (out / MANIFEST).is_symlink():
        os.replace(out / MANIFEST, out / REPLACING)
    for name in new:
        os.replace(tmp / name, out / name)
    for name in old:
        if name not in new and name not in (MANIFEST, REPLACING):
            (out / name).unlink(missing_ok=True)
    os.replace(tmp / MANIFEST, out / MANIFEST)
    (out / REPLACING).unlink(missing_ok=True)
    fsync_dir(out)
    tmp.rmdir()


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig = ExportConfig(),
    overwrite: bool = False,
    progress=None,
    key: bytes | None = None,
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
        key=key,
    )
