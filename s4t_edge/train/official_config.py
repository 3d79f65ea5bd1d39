"""Read what `s4t-edge import` needs from a published S4T config file (`--config OFFICIAL.yml`).

PyYAML is not a dependency of s4t-edge, so this reads the plain subset of YAML that such
configs are written in, and refuses anything else with the line number (give `--tasks` then):

- ``key: value`` mappings nested by indentation, ``key:`` opening a nested block;
- block lists (``- item``, including ``- key: value`` items) and flow lists/maps of scalars
  (``[a, b]``, ``{a: 1, b: 2}``);
- scalars: plain or quoted strings, integers, floats (``2e-5`` too), true/false/yes/no, null/~;
- ``#`` comments, blank lines and a leading ``---``.

No anchors, aliases, tags, multi-line strings or multiple documents.

From the parsed config (facts sheet §0, §4, §5): the source dataset (`train_db_name` of a
pretraining config), the target protocol (`val_seg`), the task list (NYUD/PASCAL:
`task_dictionary` ``include_<task>`` flags, in the published order semseg, depth, normals, edge;
Taskonomy: the list of task names, in its order), the semseg class count of that protocol, the
input normalisation and training resolution of the source dataset, and `mask_ratio` and the loss
weights when present.  Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import ConfigError
from s4t_edge.models.official import NYUD_PASCAL_ORDER, TASK_ALIASES, task_kind_of

# ----------------------------------------------------------------------------- YAML subset


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no: int, indent: int, text: str) -> None:
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _split_flow(body: str, no: int) -> list[str]:
    parts, depth, cur, quote = [], 0, "", None
    for ch in body:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            raise ConfigError(f"config line {no}: nested flow collections are not supported")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _scalar(text: str, no: int) -> Any:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return [_scalar(p, no) for p in _split_flow(t[1:-1], no)]
    if t.startswith("{") and t.endswith("}"):
        out = {}
        for p in _split_flow(t[1:-1], no):
            k, sep, v = p.partition(":")
            if not sep:
                raise ConfigError(f"config line {no}: {p!r} in a flow map is not 'key: value'")
            out[_key(k, no)] = _scalar(v, no)
        return out
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t[:1] in ("&", "*", "!", "|", ">") or t.startswith(("[", "{")):
        raise ConfigError(
            f"config line {no}: {t!r} uses YAML this reader does not parse (anchors, tags, "
            "block strings); give the tasks with --tasks instead"
        )
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "~", ""):
        return None
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def _key(text: str, no: int) -> str:
    k = text.strip()
    if len(k) >= 2 and k[0] == k[-1] and k[0] in "'\"":
        k = k[1:-1]
    if not k:
        raise ConfigError(f"config line {no}: empty key")
    return k


def _split_key(text: str) -> tuple[str, str] | None:
    """'key: rest' -> (key, rest); None when the line is not a mapping entry."""
    m = re.match(r"^('[^']*'|\"[^\"]*\"|[^:'\"]+?)\s*:(\s+|$)(.*)$", text)
    if not m:
        return None
    return m.group(1), m.group(3)


def parse_simple_yaml(text: str) -> Any:
    """Parse the YAML subset described in the module docstring; ConfigError names the line."""
    lines: list[_Line] = []
    for no, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ConfigError(f"config line {no}: indent with spaces, not tabs")
        body = _strip_comment(raw).rstrip()
        if not body.strip() or (not lines and body.strip() == "---"):
            continue
        lines.append(_Line(no, len(body) - len(body.lstrip()), body.strip()))
    if not lines:
        return {}
    value, i = _block(lines, 0, lines[0].indent)
    if i != len(lines):
        ln = lines[i]
        raise ConfigError(f"config line {ln.no}: unexpected indentation")
    return value


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[i].text):
        return _list(lines, i, indent)
    return _mapping(lines, i, indent)


def _nested(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    """The value of a 'key:' with nothing after it: a deeper block, a same-indent list, or None."""
    if i < len(lines) and lines[i].indent > indent:
        return _block(lines, i, lines[i].indent)
    if i < len(lines) and lines[i].indent == indent and _is_item(lines[i].text):
        return _list(lines, i, indent)
    return None, i


def _mapping(lines: list[_Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent and not _is_item(lines[i].text):
        ln = lines[i]
        kv = _split_key(ln.text)
        if kv is None:
            raise ConfigError(
                f"config line {ln.no}: {ln.text!r} is not 'key: value' (this reader parses a "
                "plain YAML subset); give the tasks with --tasks instead"
            )
        key, rest = _key(kv[0], ln.no), kv[1]
        if rest.strip():
            out[key], i = _scalar(rest, ln.no), i + 1
        else:
            out[key], i = _nested(lines, i + 1, indent)
    if i < len(lines) and lines[i].indent > indent:
        raise ConfigError(f"config line {lines[i].no}: unexpected indentation")
    return out, i


def _list(lines: list[_Line], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i].indent == indent and _is_item(lines[i].text):
        ln = lines[i]
        item = ln.text[1:].strip()
        if not item:
            value, i = _nested(lines, i + 1, indent)
            out.append(value)
        elif _split_key(item) is not None and not item.startswith(("'", '"', "[", "{")):
            # "- key: value" opens a mapping whose keys sit where "key" starts
            sub = indent + (len(ln.text) - len(item))
            lines[i] = _Line(ln.no, sub, item)
            value, i = _mapping(lines, i, sub)
            out.append(value)
        else:
            out.append(_scalar(item, ln.no))
            i += 1
    return out, i


# ----------------------------------------------------------------------------- what import needs

#: Dataset names the published configs use -> family key.
DATASETS = {"nyud": "nyud", "nyud_mt": "nyud", "pascalcontext": "pascal", "taskonomy": "taskonomy"}

#: Semseg classes per (source dataset, target protocol), facts sheet §3 (None: no remap).
SEMSEG_CLASSES: dict[tuple[str, str | None], int] = {
    ("nyud", "taskonomy"): 7,
    ("nyud", "pascal"): 4,
    ("nyud", None): 40,
    ("pascal", "taskonomy"): 6,
    ("pascal", "nyud"): 4,
    ("pascal", None): 21,
    ("taskonomy", "nyud"): 7,
    ("taskonomy", "pascal"): 6,
    ("taskonomy", None): 16,
}

#: Training input size of each source dataset (facts sheet §4).
TRAIN_SIZE: dict[str, tuple[int, int]] = {
    "nyud": (448, 576),
    "pascal": (512, 512),
    "taskonomy": (256, 256),
}


@dataclass(frozen=True)
class OfficialConfig:
    """What a published config says about the checkpoint it produced."""

    dataset: str | None  # source dataset family: "nyud" | "pascal" | "taskonomy"
    protocol: str | None  # val_seg family of a pretraining config (the target)
    tasks: tuple[tuple[str, int], ...]  # (published task name, channels), in the config's order
    mask_ratio: float | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)  # kind -> weight
    ttt_lambda: float | None = None  # loss_weights.TTT_loss


def _dataset(value: Any) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in DATASETS:
        raise ConfigError(
            f"unknown dataset {value!r} in the config; known: NYUD, PASCALContext, Taskonomy"
        )
    return DATASETS[key]


def _find(cfg: Any, key: str) -> Any:
    """The first value stored under `key` anywhere in the nested config (depth-first)."""
    if isinstance(cfg, dict):
        if key in cfg:
            return cfg[key]
        for v in cfg.values():
            got = _find(v, key)
            if got is not None:
                return got
    elif isinstance(cfg, list):
        for v in cfg:
            got = _find(v, key)
            if got is not None:
                return got
    return None


def _task_lists(cfg: Any) -> list[list[str]]:
    """Every list of strings in the config whose items are all published task names."""
    found: list[list[str]] = []
    if isinstance(cfg, dict):
        for v in cfg.values():
            found += _task_lists(v)
    elif isinstance(cfg, list):
        if cfg and all(isinstance(v, str) and v in TASK_ALIASES for v in cfg):
            found.append(list(cfg))
        else:
            for v in cfg:
                found += _task_lists(v)
    return found


def read_official_config(path: str | Path) -> OfficialConfig:
    """Parse `path` and extract the source dataset, task list and channels (see module doc)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e}") from None
    cfg = parse_simple_yaml(text)
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {str(p)!r} is not a YAML mapping")
    dataset = _dataset(cfg.get("train_db_name"))
    protocol = _dataset(cfg.get("val_seg")) if cfg.get("val_seg") is not None else None
    names: list[str] = []
    lists = _task_lists(cfg)
    td = _find(cfg, "task_dictionary")
    if dataset == "taskonomy" or (lists and not isinstance(td, dict)):
        if not lists:
            raise ConfigError(f"{str(p)!r} lists no task names; give them with --tasks")
        names = lists[0]
    elif isinstance(td, dict):
        unsupported = [k[8:] for k, v in td.items() if k.startswith("include_") and v
                       and k[8:] not in NYUD_PASCAL_ORDER]  # fmt: skip
        if unsupported:
            raise ConfigError(
                f"{str(p)!r} includes task(s) {unsupported} that s4t-edge does not model; "
                "the supported kinds are semseg, depth, normals, edge"
            )
        names = [t for t in NYUD_PASCAL_ORDER if td.get(f"include_{t}")]
    if not names:
        raise ConfigError(f"{str(p)!r} names no task (task_dictionary or a task list)")
    tasks = []
    for name in names:
        kind = task_kind_of(name)
        if kind == "semseg":
            if dataset is None:
                raise ConfigError(
                    f"{str(p)!r} has no train_db_name, so its semseg class count is unknown; "
                    "give the tasks with --tasks"
                )
            ch = SEMSEG_CLASSES.get((dataset, protocol), SEMSEG_CLASSES[(dataset, None)])
        else:
            ch = {"depth": 1, "normals": 3, "edge": 1}[kind]
        tasks.append((name, ch))
    weights: dict[str, float] = {}
    lam = None
    lw = _find(cfg, "loss_weights")
    if isinstance(lw, dict):
        for k, v in lw.items():
            if k == "TTT_loss":
                lam = float(v)
            elif k in TASK_ALIASES and isinstance(v, int | float):
                weights[TASK_ALIASES[k]] = float(v)
    mr = _find(cfg, "mask_ratio")
    return OfficialConfig(
        dataset=dataset,
        protocol=protocol,
        tasks=tuple(tasks),
        mask_ratio=float(mr) if isinstance(mr, int | float) else None,
        loss_weights=weights,
        ttt_lambda=lam,
    )
