"""Parameter names of the published S4T code (`CNN_MTL_S4T`) and how they map onto ours.

The published model and s4t-edge's hold the same tensors under almost the same names (DESIGN.md
§2); the differences, all renames with equal shapes:

- training under DistributedDataParallel prefixes every key with ``module.``;
- the joint decoder is ``joint_dec`` (ours ``joint_decoder``) and its patch embedding wraps the
  convolution as ``patch_embed.proj`` (ours ``patch_embed``);
- each task head wraps its 1×1 convolution as ``linear_pred`` (``heads.<task>.linear_pred.*``,
  ``aux_heads.<task>.linear_pred.*``);
- task names follow the source dataset (``segment_semantic``, ``depth_zbuffer``, ``normal``,
  ``edge_occlusion`` on Taskonomy); ours are the task kinds;
- the two fixed sin-cos position tables ``joint_dec.pos_embed`` and ``joint_dec.decoder_pos_embed``
  are stored there and recomputed here (our buffers are not persistent).

Everything else -- backbone (torchvision names), ``ts_comp``, BatchNorm running statistics and
``num_batches_tracked`` -- keeps its name.  Torch-free: this module only rewrites strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from s4t_edge.errors import ConfigError

#: Task names as the published datasets spell them -> s4t-edge task kind.
TASK_ALIASES: dict[str, str] = {
    "semseg": "semseg",
    "segment_semantic": "semseg",
    "depth": "depth",
    "depth_zbuffer": "depth",
    "normals": "normals",
    "normal": "normals",
    "edge": "edge",
    "edge_occlusion": "edge",
}

#: The Taskonomy spellings (a checkpoint using them was trained on Taskonomy).
TASKONOMY_NAMES: dict[str, str] = {
    "semseg": "segment_semantic",
    "depth": "depth_zbuffer",
    "normals": "normal",
    "edge": "edge_occlusion",
}

#: Task order of the published configs, by dataset family (facts sheet §5.1): NYUD and PASCAL
#: build [semseg, depth, normals, edge] (missing tasks left out); the Taskonomy configs list
#: [depth_zbuffer, edge_occlusion, normal, segment_semantic].
NYUD_PASCAL_ORDER: tuple[str, ...] = ("semseg", "depth", "normals", "edge")
TASKONOMY_ORDER: tuple[str, ...] = ("depth", "edge", "normals", "semseg")

#: The fixed position tables the published state dict stores and s4t-edge recomputes.
POS_EMBED_KEYS: tuple[str, ...] = ("joint_dec.pos_embed", "joint_dec.decoder_pos_embed")

DDP_PREFIX = "module."


def task_kind_of(name: str) -> str:
    """s4t-edge kind of a published task name (either spelling)."""
    kind = TASK_ALIASES.get(name)
    if kind is None:
        raise ConfigError(
            f"unknown task {name!r}; use the published names ({', '.join(TASK_ALIASES)})"
        )
    return kind


def to_ours(key: str) -> str | None:
    """Our parameter name of one published key (without ``module.``); None for a position table.

    Head task names are mapped to kinds, so ``heads.depth_zbuffer.linear_pred.weight`` becomes
    ``heads.depth.weight``.  An unknown task name in a head key raises `ConfigError`.
    """
    if key in POS_EMBED_KEYS:
        return None
    if key.startswith("joint_dec.patch_embed.proj."):
        return "joint_decoder.patch_embed." + key[len("joint_dec.patch_embed.proj.") :]
    if key.startswith("joint_dec."):
        return "joint_decoder." + key[len("joint_dec.") :]
    for branch in ("heads.", "aux_heads."):
        if key.startswith(branch):
            task, _, rest = key[len(branch) :].partition(".")
            if rest.startswith("linear_pred."):
                rest = rest[len("linear_pred.") :]
            return f"{branch}{task_kind_of(task)}.{rest}"
    return key


def to_official(key: str, names: Mapping[str, str] | None = None) -> str:
    """The published key of one of our parameter names (without ``module.``).

    Args:
        key: our name.
        names: kind -> the published task name to use (default: the kind itself, the NYUD
            spelling; `TASKONOMY_NAMES` for a Taskonomy checkpoint).
    """
    names = names or {}
    if key.startswith("joint_decoder.patch_embed."):
        return "joint_dec.patch_embed.proj." + key[len("joint_decoder.patch_embed.") :]
    if key.startswith("joint_decoder."):
        return "joint_dec." + key[len("joint_decoder.") :]
    for branch in ("heads.", "aux_heads."):
        if key.startswith(branch):
            kind, _, rest = key[len(branch) :].partition(".")
            return f"{branch}{names.get(kind, kind)}.linear_pred.{rest}"
    return key


def official_names(our_keys: Iterable[str], names: Mapping[str, str] | None = None) -> list[str]:
    """Every key of the published state dict of a model whose state dict has `our_keys`:
    the renamed keys followed by the two position tables (421 for the `paper` preset)."""
    return [to_official(k, names) for k in our_keys] + list(POS_EMBED_KEYS)


def head_tasks(keys: Iterable[str]) -> list[str]:
    """Published task names of the main heads, in the order their keys appear."""
    out: list[str] = []
    for k in keys:
        if k.startswith("heads.") and k.endswith(".weight"):
            task = k[len("heads.") :].split(".", 1)[0]
            if task not in out:
                out.append(task)
    return out


def channel_position_quirk(
    kinds: list[str], channels: Mapping[str, int], family: str
) -> str | None:
    """What the published code does to this checkpoint on the other dataset family, if anything.

    The published TTT code loads a checkpoint into a model built for the *target* dataset, whose
    task order differs (facts sheet §7.1): heads are renamed by task, but ``ts_comp`` slices and
    the joint decoder's output channels have no task in their names and are copied by position.
    s4t-edge keeps every channel with its task; this says what the published numbers include.

    Args:
        kinds: the checkpoint's task order (kinds).
        channels: kind -> output channels.
        family: "taskonomy" or "nyud_pascal", the dataset family the checkpoint was trained on.

    Returns:
        One sentence, or None when the other family's order is the same (nothing is scrambled).
    """
    if family == "taskonomy":
        target, order = "NYUD/PASCAL", [k for k in NYUD_PASCAL_ORDER if k in kinds]
    else:
        target, order = "Taskonomy", [k for k in TASKONOMY_ORDER if k in kinds]
    if order == list(kinds):
        return None
    src: dict[str, tuple[int, int]] = {}
    off = 0
    for k in kinds:
        src[k] = (off, off + channels[k])
        off += channels[k]
    off = 0
    for k in order:  # the first target task whose joint-decoder channels belonged to others
        lo, hi = off, off + channels[k]
        off = hi
        if src[k] != (lo, hi):
            owners = [t for t in kinds if src[t][0] < hi and src[t][1] > lo]
            return (
                f"the published code, adapting this checkpoint on {target} (task order "
                f"{', '.join(order)}, here {', '.join(kinds)}), copies ts_comp slices and "
                f"joint-decoder channels by position: its {k} joint output reads channels "
                f"{lo}-{hi - 1}, which belong to {', '.join(owners)} here (facts sheet §7.1). "
                "Published cross-dataset numbers include that; s4t-edge keeps every channel "
                "with its task"
            )
    return (  # same channel spans, but the ts_comp slices still move with the task index
        f"the published code, adapting this checkpoint on {target} (task order "
        f"{', '.join(order)}, here {', '.join(kinds)}), copies ts_comp slices by position "
        "(facts sheet §7.1); s4t-edge keeps every channel with its task"
    )
