"""The one validator of `manifest.json`: every fact the runtime relies on, established up front.

`Artifact.load` (every backend) and `s4t-edge check` both call `validate_manifest` before any
field is used, so a wrong type, an absurd size or a path that leaves the artifact ends in one
`ArtifactError` line naming the field -- not in a traceback, a division by zero or a
petabyte allocation deep inside a backend.  What it establishes:

- format and version; every field's type;
- file names: plain names inside the artifact directory (no ``..``, no absolute paths, no
  separators, no symlinks), each with a sha256;
- shapes: the static batch, image size and mask-noise shape within `LIMITS`, consistent with each
  other (every cut tensor and the noise lead with the batch);
- tasks: a non-empty list of unique names with a known kind and channel count;
- θ: unique names, float32, positive shapes, `numel` equal to their sum;
- graphs: each graph's inputs/outputs are the ones the runtime feeds and reads (image -> cut;
  cut, θ, noise -> loss, per-task losses, one gradient per θ tensor of its shape; cut, θ ->
  one prediction per task of shape (N, C, H, W)); the step's ``task_weights`` [T] input exactly when
  ``task_weighting`` is ``"first-step"``;
- `s4t`: steps within `LIMITS.max_steps`, a valid optimiser.

The graphs' own I/O is compared with these specs where the graphs are opened (ONNX Runtime at
session creation; `check` with onnx).
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.runtime.policy import SHIFT_STAT

FORMAT = "s4t-edge-artifact"
FORMAT_VERSION = 1
GRAPH_NAMES = ("backbone", "step", "predict")
_REEXPORT = "re-export it with `s4t-edge export`"
#: The kinds of task the runtime knows how to score (same names as the dataset labels).
TASK_KINDS = ("semseg", "depth", "normals", "edge")
_FIXED_CHANNELS = {"depth": 1, "normals": 3, "edge": 1}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Limits:
    """Bounds on what an artifact may ask the runtime to allocate or do."""

    max_batch: int = 1024  # static batch (the exporter's own limit)
    max_side: int = 8192  # image height/width in pixels
    max_tokens: int = 1 << 20  # mask-noise length per image
    max_tasks: int = 64
    max_channels: int = 4096  # per task
    max_tensor_numel: int = 1 << 31  # any one θ or cut tensor
    max_theta_numel: int = 1 << 31  # θ in total (the paper model has 29 M parameters)
    max_steps: int = (
        10_000  # S4T steps per batch (CLI, API and manifest; a TensorRT noise bank holds K rows)
    )


LIMITS = Limits()


def _fail(field: str, problem: str) -> ArtifactError:
    return ArtifactError(f"manifest.json field {field}: {problem}; {_REEXPORT}")


def _dict(v: Any, field: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(field, f"expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, field: str) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(field, f"expected a list, got {type(v).__name__}")
    return v


def _str(v: Any, field: str) -> str:
    if not isinstance(v, str) or not v or "\0" in v:
        raise _fail(field, f"expected a non-empty string, got {v!r}"[:200])
    return v


def _int(v: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(field, f"expected an integer, got {v!r}"[:200])
    if not lo <= v <= hi:
        raise _fail(field, f"{v} is outside [{lo}, {hi}]")
    return v


def _float(v: Any, field: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(field, f"expected a finite number, got {v!r}"[:200])
    if positive and not v > 0:
        raise _fail(field, f"must be positive, got {v}")
    return float(v)


def _shape(v: Any, field: str, max_numel: int) -> tuple[int, ...]:
    dims = _list(v, field)
    if len(dims) > 8:
        raise _fail(field, f"{len(dims)} dimensions; at most 8 are expected")
    shape = tuple(_int(d, f"{field}[{i}]", 1, 1 << 40) for i, d in enumerate(dims))
    if math.prod(shape) > max_numel:
        raise _fail(field, f"shape {list(shape)} holds more than {max_numel:,} values")
    return shape


def _tensor(
    v: Any, field: str, dtypes: tuple[str, ...] = ("float32",), max_numel: int | None = None
) -> tuple[str, tuple[int, ...]]:
    d = _dict(v, field)
    name = _str(d.get("name"), f"{field}.name")
    shape = _shape(d.get("shape"), f"{field}.shape", max_numel or LIMITS.max_tensor_numel)
    dtype = d.get("dtype", "float32")
    if dtype not in dtypes:
        raise _fail(f"{field}.dtype", f"{dtype!r} is not one of {', '.join(dtypes)}")
    return name, shape


def safe_file_name(name: Any, field: str) -> str:
    """A file name the artifact may list: one plain path component, nothing that leaves it."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise _fail(
            field,
            f"{name!r} is not a plain file name inside the artifact (no paths, '..' or hidden "
            "names)"[:200],
        )
    return name


def check_member_file(root: Path, name: str) -> Path:
    """`root/name` must be a regular file directly in `root`, not a symlink or anything else."""
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ArtifactError(f"artifact file {str(path)!r} is missing; {_REEXPORT}") from None
    except OSError as e:
        raise ArtifactError(f"cannot read artifact file {str(path)!r}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ArtifactError(
            f"artifact file {str(path)!r} is a symbolic link; s4t-edge reads only files inside "
            "the artifact directory -- copy the real file in"
        )
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"artifact file {str(path)!r} is not a regular file; {_REEXPORT}")
    return path


def _check_io(
    graph: str,
    d: dict[str, Any],
    want_in: dict[str, tuple[int, ...]] | None,
    allowed_in: dict[str, tuple[int, ...]],
    want_out: dict[str, tuple[int, ...]],
    exact_out: bool,
) -> None:
    field = f"graphs.{graph}"
    ins: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(d.get("inputs"), f"{field}.inputs")):
        name, shape = _tensor(t, f"{field}.inputs[{i}]")
        if name in ins:
            raise _fail(f"{field}.inputs", f"input {name!r} is listed twice")
        if name not in allowed_in:
            raise _fail(f"{field}.inputs", f"{name!r} is not a tensor the runtime feeds")
        if shape != allowed_in[name]:
            raise _fail(
                f"{field}.inputs[{i}]",
                f"{name!r} has shape {list(shape)}, elsewhere {list(allowed_in[name])}",
            )
        ins[name] = shape
    if want_in is not None and set(ins) != set(want_in):
        missing = sorted(set(want_in) - set(ins))
        raise _fail(f"{field}.inputs", f"lacks {', '.join(map(repr, missing[:3]))}")
    outs: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(d.get("outputs"), f"{field}.outputs")):
        # scalars (the losses) have shape []
        dd = _dict(t, f"{field}.outputs[{i}]")
        name = _str(dd.get("name"), f"{field}.outputs[{i}].name")
        dims = _list(dd.get("shape"), f"{field}.outputs[{i}].shape")
        shape = () if not dims else _shape(dims, f"{field}.outputs[{i}].shape", 1 << 40)
        if dd.get("dtype", "float32") not in ("float32", "float16"):
            raise _fail(f"{field}.outputs[{i}].dtype", f"{dd.get('dtype')!r} is not float32")
        if name in outs:
            raise _fail(f"{field}.outputs", f"output {name!r} is listed twice")
        outs[name] = shape
    for name, shape in want_out.items():
        if name not in outs:
            raise _fail(f"{field}.outputs", f"lacks output {name!r}")
        if shape and outs[name] != shape:
            raise _fail(
                f"{field}.outputs",
                f"{name!r} has shape {list(outs[name])}, expected {list(shape)}",
            )
    if exact_out and set(outs) != set(want_out):
        extra = sorted(set(outs) - set(want_out))
        raise _fail(f"{field}.outputs", f"unexpected output {extra[0]!r}")
    if graph == "backbone" and not outs:
        raise _fail(f"{field}.outputs", "the backbone produces no cut tensor")


#: Control inputs a manifest may declare: the BatchNorm statistics mix α (models.norm).
CONTROLS = ("bn_mix",)
#: How the step weighs the tasks: "published" (λ·w_t^p baked into the graph) or "first-step"
#: (a step input `TASK_WEIGHTS` [T], in task order, that the runtime sets per batch).
TASK_WEIGHTINGS = ("published", "first-step")
TASK_WEIGHTS = "task_weights"
#: Statistics a backbone may output besides the cut (`s4t_edge.models.norm.bn_shift`).
STATS = (SHIFT_STAT,)


def validate_manifest(manifest: Any) -> None:
    """Raise one `ArtifactError` line naming the first field that breaks the contract."""
    m = _dict(manifest, "(top level)")
    if m.get("format") != FORMAT:
        raise ArtifactError(
            f"manifest.json is not an s4t-edge artifact manifest (format {m.get('format')!r}); "
            "point at a directory written by `s4t-edge export`"
        )
    if m.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format_version {m.get('format_version')!r} is not supported by this "
            f"s4t-edge (reads version {FORMAT_VERSION}); re-export with this version or upgrade"
        )
    missing = [
        k for k in ("input", "mask_noise", "theta", "cut", "graphs", "tasks", "files") if k not in m
    ]
    if missing:
        raise ArtifactError(f"manifest.json lacks the key(s) {', '.join(missing)}; {_REEXPORT}")

    # input (N, 3, H, W) and its normalisation
    inp = _dict(m["input"], "input")
    in_name, in_shape = _tensor(inp, "input")
    if len(in_shape) != 4 or in_shape[1] != 3:
        raise _fail("input.shape", f"{list(in_shape)} is not (N, 3, H, W)")
    n, _, h, w = in_shape
    _int(n, "input.shape[0] (batch)", 1, LIMITS.max_batch)
    _int(h, "input.shape[2] (height)", 1, LIMITS.max_side)
    _int(w, "input.shape[3] (width)", 1, LIMITS.max_side)
    for key, positive in (("mean", False), ("std", True)):
        if key in inp:
            vals = _list(inp[key], f"input.{key}")
            if len(vals) != 3:
                raise _fail(f"input.{key}", f"expected 3 values (RGB), got {len(vals)}")
            for i, v in enumerate(vals):
                _float(v, f"input.{key}[{i}]", positive=positive)

    noise_name, noise_shape = _tensor(m["mask_noise"], "mask_noise")
    if len(noise_shape) != 2 or noise_shape[0] != n:
        raise _fail("mask_noise.shape", f"{list(noise_shape)} is not (batch {n}, tokens)")
    _int(noise_shape[1], "mask_noise.shape[1] (tokens)", 1, LIMITS.max_tokens)

    # tasks
    tasks = _list(m["tasks"], "tasks")
    if not tasks:
        raise _fail("tasks", "the list is empty; an artifact predicts at least one task")
    if len(tasks) > LIMITS.max_tasks:
        raise _fail("tasks", f"{len(tasks)} tasks; at most {LIMITS.max_tasks}")
    task_ch: dict[str, int] = {}
    for i, t in enumerate(tasks):
        d = _dict(t, f"tasks[{i}]")
        name = _str(d.get("name"), f"tasks[{i}].name")
        ch = _int(d.get("channels"), f"tasks[{i}].channels", 1, LIMITS.max_channels)
        kind = d.get("kind", name)
        if kind not in TASK_KINDS:
            raise _fail(f"tasks[{i}].kind", f"{kind!r} is not one of {', '.join(TASK_KINDS)}")
        if kind in _FIXED_CHANNELS and ch != _FIXED_CHANNELS[kind]:
            raise _fail(f"tasks[{i}].channels", f"{kind} has {_FIXED_CHANNELS[kind]}, not {ch}")
        if name in task_ch:
            raise _fail("tasks", f"task {name!r} is listed twice")
        task_ch[name] = ch

    # θ
    theta = _dict(m["theta"], "theta")
    theta_file = safe_file_name(theta.get("file", "theta.safetensors"), "theta.file")
    theta_shapes: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(theta.get("tensors"), "theta.tensors")):
        name, shape = _tensor(t, f"theta.tensors[{i}]")
        if name in theta_shapes:
            raise _fail("theta.tensors", f"θ tensor {name!r} is listed twice")
        theta_shapes[name] = shape
    total = sum(math.prod(s) for s in theta_shapes.values())
    if total > LIMITS.max_theta_numel:
        raise _fail("theta.tensors", f"θ holds {total:,} values, more than any model here")
    if "numel" in theta and _int(theta["numel"], "theta.numel", 0, 1 << 62) != total:
        raise _fail("theta.numel", f"{theta['numel']} but the tensors hold {total}")

    # per-batch control inputs of the backbone (each crosses the cut as cut/NAME, shape [1])
    controls: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(m.get("controls", []), "controls")):
        name, shape = _tensor(t, f"controls[{i}]", ("float32",))
        if name not in CONTROLS or shape != (1,) or name in controls:
            raise _fail(f"controls[{i}]", f"unknown or repeated control {name!r} {list(shape)}")
        controls[name] = shape

    # cut tensors lead with the batch
    cut_shapes: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(m["cut"], "cut")):
        name, shape = _tensor(t, f"cut[{i}]", ("float32", "float16"))
        # a tensor computed from the controls alone (e.g. (1 - α)·running mean) has no batch axis
        if shape[0] != n and not (controls and shape[0] == 1):
            raise _fail(f"cut[{i}].shape", f"{list(shape)} does not lead with the batch {n}")
        if name in cut_shapes:
            raise _fail("cut", f"cut tensor {name!r} is listed twice")
        cut_shapes[name] = shape
    # statistics the backbone outputs besides the cut: known names, [1], only beside the controls
    stat_shapes: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(_list(m.get("stats", []), "stats")):
        name, shape = _tensor(t, f"stats[{i}]", ("float32",))
        if name not in STATS or shape != (1,) or name in stat_shapes or not controls:
            raise _fail(f"stats[{i}]", f"unknown or repeated statistic {name!r} {list(shape)}")
        stat_shapes[name] = shape
    clash = set(cut_shapes) & set(theta_shapes) | (
        {noise_name, in_name, TASK_WEIGHTS} & set(theta_shapes)
    )
    if clash:
        raise _fail("theta.tensors", f"{sorted(clash)[0]!r} is also a cut or input name")

    # files
    files = _dict(m["files"], "files")
    for fname, digest in files.items():
        safe_file_name(fname, f"files[{fname!r}]")
        if fname == "manifest.json":
            raise _fail("files", "the manifest cannot list its own hash")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _fail(f"files[{fname!r}]", "expected a 64-digit lowercase hex sha256")

    # graphs
    graphs = _dict(m["graphs"], "graphs")
    for g in GRAPH_NAMES:
        if g not in graphs:
            raise ArtifactError(f"manifest.json lists no graph {g!r}; {_REEXPORT}")
        d = _dict(graphs[g], f"graphs.{g}")
        fname = safe_file_name(d.get("file"), f"graphs.{g}.file")
        if fname not in files:
            raise _fail("files", f"records no sha256 for {fname}")
        if "opset" in d:
            _int(d["opset"], f"graphs.{g}.opset", 1, 100)
        for j, op in enumerate(_list(d.get("ops", []), f"graphs.{g}.ops")):
            _str(op, f"graphs.{g}.ops[{j}]")
    if theta_file not in files:
        raise _fail("files", f"records no sha256 for {theta_file}")
    graph_files = [graphs[g]["file"] for g in GRAPH_NAMES]
    if len(set(graph_files)) != len(graph_files) or theta_file in graph_files:
        raise _fail("graphs", "two entries name the same file")

    bb_in = {in_name: in_shape, **controls}
    _check_io("backbone", graphs["backbone"], bb_in, bb_in, {}, False)
    bb_out = {
        _str(_dict(t, "graphs.backbone.outputs[]").get("name"), "graphs.backbone.outputs[].name")
        for t in graphs["backbone"]["outputs"]
    }
    bb_shapes = {**cut_shapes, **stat_shapes}
    if bb_out != set(bb_shapes):
        odd = sorted(bb_out ^ set(bb_shapes))
        raise _fail(
            "graphs.backbone.outputs", f"{odd[0]!r}: the outputs must be exactly the cut and stats"
        )
    for t in graphs["backbone"]["outputs"]:
        if tuple(t.get("shape") or ()) != bb_shapes[t["name"]]:
            raise _fail("graphs.backbone.outputs", f"{t['name']!r} differs from its cut entry")
    feedable = {**cut_shapes, **theta_shapes}
    weighting = m.get("task_weighting", "published")
    if weighting not in TASK_WEIGHTINGS:
        raise _fail("task_weighting", f"{weighting!r} is not one of {', '.join(TASK_WEIGHTINGS)}")
    # the step takes the task weights exactly when the manifest says first-step, one per task
    weights_in = [
        t
        for t in _list(graphs["step"].get("inputs"), "graphs.step.inputs")
        if isinstance(t, dict) and t.get("name") == TASK_WEIGHTS
    ]
    if weighting == "first-step" and not weights_in:
        raise _fail(
            "graphs.step.inputs", f"lacks {TASK_WEIGHTS!r}, which first-step weighting needs"
        )
    if weighting != "first-step" and weights_in:
        raise _fail(
            "graphs.step.inputs",
            f"{TASK_WEIGHTS!r} is an input, but task_weighting is {weighting!r}",
        )
    step_extra = {TASK_WEIGHTS: (len(task_ch),)} if weights_in else {}
    step_out: dict[str, tuple[int, ...]] = {"loss": ()}
    step_out.update({f"grad/{k}": s for k, s in theta_shapes.items()})
    if weights_in:  # the runtime reads every task's term to set its weight
        step_out.update({f"loss/{t}": () for t in task_ch})
    _check_io(
        "step",
        graphs["step"],
        None,
        {**feedable, noise_name: noise_shape, **step_extra},
        step_out,
        False,
    )
    step_inputs = {t["name"] for t in graphs["step"]["inputs"]}
    lacking = sorted(set(theta_shapes) - step_inputs)
    if lacking:
        raise _fail("graphs.step.inputs", f"lacks θ tensor {lacking[0]!r}")
    pred_out = {f"pred/{t}": (n, c, h, w) for t, c in task_ch.items()}
    _check_io("predict", graphs["predict"], None, feedable, pred_out, False)

    # runtime settings
    s4t = m.get("s4t")
    if s4t is not None:
        s4t = _dict(s4t, "s4t")
        if s4t.get("steps") is not None:
            _int(s4t["steps"], "s4t.steps", 0, LIMITS.max_steps)
        if s4t.get("optimizer") is not None:
            from s4t_edge.runtime.optim import OptimizerConfig

            try:
                OptimizerConfig.from_dict(_dict(s4t["optimizer"], "s4t.optimizer"))
            except ConfigError as e:
                raise _fail("s4t.optimizer", str(e)) from None
    if m.get("source_run") is not None:
        _str(m["source_run"], "source_run")
    if m.get("scope") is not None:
        _str(m["scope"], "scope")
    if m.get("policy") is not None:
        from s4t_edge.runtime.policy import AdaptPolicy

        try:
            AdaptPolicy.from_dict(m["policy"])
        except (ConfigError, TypeError) as e:
            raise _fail("policy", str(e)) from None
    from s4t_edge.runtime.policy import OBJECTIVES

    if m.get("objective", "s4t") not in OBJECTIVES:
        raise _fail("objective", f"{m['objective']!r} is not 's4t' or 'entropy'")
