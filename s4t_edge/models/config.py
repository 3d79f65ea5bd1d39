"""Model configuration and presets (torch-free).

This module imports nothing heavy so that code which only needs to *read* a model description --
the manifest writer, the CLI's argument checks, tools inspecting a run directory -- can do so
without importing torch.  Everything that builds modules lives in the sibling modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s4t_edge.errors import ConfigError

# The dense-prediction task kinds the losses, metrics and runtime know how to handle.
TASK_KINDS: tuple[str, ...] = ("semseg", "depth", "normals", "edge")

# Kinds whose channel count is fixed by what the output means (semseg is free: one per class).
FIXED_TASK_CHANNELS: dict[str, int] = {"depth": 1, "normals": 3, "edge": 1}

# The published NYUD-style task set (7 synthetic classes instead of NYUD's 40).
DEFAULT_TASKS: dict[str, int] = {"semseg": 7, "depth": 1, "normals": 3, "edge": 1}

# Backbone stages after which residual adapters may be inserted (torchvision stage names).
ADAPTER_STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def task_kind(name: str) -> str:
    """The kind of a task.  A task's name *is* its kind (kept as a function so that can change)."""
    if name not in TASK_KINDS:
        raise ConfigError(f"unknown task {name!r}; choose task names among {', '.join(TASK_KINDS)}")
    return name


def normalize_tasks(
    tasks: Mapping[str, int] | Sequence[Sequence[Any]],
) -> tuple[tuple[str, int], ...]:
    """Validate a task set and return it as an ordered tuple of (name, channels).

    Order matters: it fixes the channel layout of ts_comp and of the joint decoder output, so it is
    kept exactly as given (a mapping keeps insertion order; JSON gives a list of pairs).
    """
    if isinstance(tasks, Mapping):
        items = list(tasks.items())
    else:
        try:
            items = [tuple(p) for p in tasks]
        except TypeError:
            raise ConfigError(
                f"tasks must be a mapping name -> channels, got {type(tasks).__name__}; "
                f"e.g. {DEFAULT_TASKS}"
            ) from None
        if any(len(p) != 2 for p in items):
            raise ConfigError(f"tasks must be (name, channels) pairs, got {tasks!r}")
    if not items:
        raise ConfigError(f"at least one task is needed; e.g. {DEFAULT_TASKS}")
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for name, channels in items:
        kind = task_kind(str(name))
        if name in seen:
            raise ConfigError(f"task {name!r} is given twice; list every task once")
        seen.add(name)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ConfigError(
                f"task {name!r} needs a positive integer channel count, got {channels!r}"
            )
        need = FIXED_TASK_CHANNELS.get(kind)
        if need is not None and channels != need:
            raise ConfigError(
                f"task {name!r} must have {need} output channel(s), got {channels}; "
                f"set {name}={need}"
            )
        out.append((str(name), int(channels)))
    return tuple(out)


def _pos_int(name: str, v: Any, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"model config field {name!r} must be an integer >= {minimum}, got {v!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an S4T model (architecture only, no weights).

    Defaults are the published architecture (`paper` preset).  Stored in run directories and in
    the export manifest, so every field is JSON-friendly via `to_dict`.
    """

    # Name of the preset the config was derived from (informational; fields below are authoritative).
    preset: str = "paper"
    # Backbone name in the backbone registry (`list_backbones()`).
    backbone: str = "resnet50"
    # Ordered (task name, output channels); order fixes channel offsets, lookups are by name.
    tasks: tuple[tuple[str, int], ...] = tuple(DEFAULT_TASKS.items())
    # Input image size (H, W) the model is built and exported for; multiples of 32.
    input_size: tuple[int, int] = (256, 256)
    # Per-channel RGB mean used by preprocessing: (x/255 - mean) / std.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    # Per-channel RGB std used by preprocessing.
    std: tuple[float, float, float] = IMAGENET_STD
    # ts_comp channels per task (task i owns channels [i*ts, (i+1)*ts)).
    ts_channels: int = 64
    # Square size the ts_comp map is resized to before the joint decoder's patch embedding.
    decoder_image_size: int = 256
    # Patch size of the joint decoder (tokens = (decoder_image_size / patch_size) ** 2).
    patch_size: int = 16
    # Joint-decoder encoder: number of ViT blocks.
    enc_depth: int = 4
    # Joint-decoder encoder: token width.
    enc_dim: int = 64
    # Joint-decoder encoder: attention heads.
    enc_heads: int = 4
    # Joint-decoder decoder: number of ViT blocks.
    dec_depth: int = 2
    # Joint-decoder decoder: token width.
    dec_dim: int = 64
    # Joint-decoder decoder: attention heads.
    dec_heads: int = 4
    # Hidden width of the ViT MLPs as a multiple of the token width.
    mlp_ratio: float = 4.0
    # Fraction of tokens masked by the joint decoder (MAE-style); 0.8 keeps 20 %.
    mask_ratio: float = 0.8
    # LayerNorm epsilon of the joint decoder.
    ln_eps: float = 1e-6
    # Backbone stages followed by a residual adapter (subset of layer1..layer4, stage order).
    adapters: tuple[str, ...] = ()
    # Adapter bottleneck width = max(adapter_min_width, stage channels // adapter_reduction).
    adapter_reduction: int = 16
    # Lower bound of the adapter bottleneck width (keeps tiny models' adapters useful).
    adapter_min_width: int = 8

    def __post_init__(self) -> None:
        # Normalise JSON-ish inputs (lists) to tuples so configs compare and hash by value.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("tasks", normalize_tasks(self.tasks))
        put("input_size", self._pair("input_size", self.input_size))
        put("mean", self._triple("mean", self.mean))
        put("std", self._triple("std", self.std))
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        if isinstance(self.adapters, str) or not isinstance(self.adapters, Sequence):
            raise ConfigError(f"adapters must be a list of stage names, got {self.adapters!r}")
        bad = [s for s in self.adapters if s not in ADAPTER_STAGES]
        if bad:
            raise ConfigError(
                f"unknown adapter stage(s) {bad}; choose among {', '.join(ADAPTER_STAGES)}"
            )
        put("adapters", tuple(s for s in ADAPTER_STAGES if s in set(self.adapters)))
        put("mlp_ratio", float(self.mlp_ratio))
        put("mask_ratio", float(self.mask_ratio))
        put("ln_eps", float(self.ln_eps))
        self._validate()

    @staticmethod
    def _pair(name: str, v: Any) -> tuple[int, int]:
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v, v)
        try:
            h, w = v
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be (height, width), got {v!r}") from None
        for x in (h, w):
            _pos_int(name, x)
            if x % 32:
                raise ConfigError(
                    f"{name} {tuple(v)} must be a multiple of 32 in both dimensions "
                    "(the backbone downsamples by 32); resize or crop the images"
                )
        return int(h), int(w)

    @staticmethod
    def _triple(name: str, v: Any) -> tuple[float, float, float]:
        try:
            a, b, c = (float(x) for x in v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be three numbers (R, G, B), got {v!r}") from None
        return a, b, c

    def _validate(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone must be a registered name, got {self.backbone!r}")
        for name in (
            "ts_channels",
            "decoder_image_size",
            "patch_size",
            "enc_dim",
            "enc_heads",
            "dec_dim",
            "dec_heads",
            "adapter_reduction",
            "adapter_min_width",
        ):
            _pos_int(name, getattr(self, name))
        _pos_int("enc_depth", self.enc_depth, 0)
        _pos_int("dec_depth", self.dec_depth, 0)
        if self.decoder_image_size % self.patch_size:
            raise ConfigError(
                f"decoder_image_size {self.decoder_image_size} must be a multiple of "
                f"patch_size {self.patch_size}"
            )
        for part in ("enc", "dec"):
            dim, heads = getattr(self, f"{part}_dim"), getattr(self, f"{part}_heads")
            if dim % heads:
                raise ConfigError(f"{part}_dim {dim} must be divisible by {part}_heads {heads}")
            if dim % 4:
                raise ConfigError(
                    f"{part}_dim {dim} must be a multiple of 4 (2-D sin-cos position embedding)"
                )
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.len_keep < 1:
            raise ConfigError(
                f"mask_ratio {self.mask_ratio} keeps no token out of {self.num_tokens}; lower it"
            )
        if self.ln_eps <= 0:
            raise ConfigError(f"ln_eps must be positive, got {self.ln_eps}")

    # ----------------------------------------------------------------- derived quantities
    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in channel-layout order."""
        return tuple(n for n, _ in self.tasks)

    @property
    def task_channels(self) -> dict[str, int]:
        """Task name -> output channels (ordered)."""
        return dict(self.tasks)

    @property
    def total_channels(self) -> int:
        """Sum of the output channels of all tasks (width of the joint decoder's output)."""
        return sum(c for _, c in self.tasks)

    @property
    def num_tokens(self) -> int:
        """Tokens of the joint decoder, L = (decoder_image_size / patch_size) ** 2."""
        return (self.decoder_image_size // self.patch_size) ** 2

    @property
    def len_keep(self) -> int:
        """Tokens the joint decoder's encoder sees: int(L * (1 - mask_ratio)), as in MAE."""
        return int(self.num_tokens * (1 - self.mask_ratio))

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict.  Tasks are a list of [name, channels] pairs so that key-sorted
        JSON writers cannot reorder them."""
        d = dataclasses.asdict(self)
        d["tasks"] = [[n, c] for n, c in self.tasks]
        for k in ("input_size", "mean", "std", "adapters"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error (a typo must not be silently dropped)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {unknown}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**dict(d))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated like a new config)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(
                f"unknown model config field(s) {unknown}; valid: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- presets
_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}


def register_preset(
    name: str,
) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Decorator registering a function that returns the ModelConfig fields of a preset."""

    def deco(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = fn
        return fn

    return deco


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return sorted(_PRESETS)


@register_preset("paper")
def _paper() -> dict[str, Any]:
    # The published CNN_MTL_S4T: ResNet-50, 256x256, 64 ts channels/task, MAE-tiny joint decoder.
    return {}


@register_preset("tiny")
def _tiny() -> dict[str, Any]:
    # Trains on two CPU cores in minutes; same structure as `paper`, everything scaled down.
    return dict(
        backbone="tiny",
        input_size=(64, 64),
        ts_channels=16,
        decoder_image_size=64,
        patch_size=8,
        enc_depth=2,
        enc_dim=32,
        enc_heads=2,
        dec_depth=1,
        dec_dim=32,
        dec_heads=2,
    )


@register_preset("resnet18")
def _resnet18() -> dict[str, Any]:
    # A real ResNet at a CPU-friendly size, for benchmarks on machines without a GPU.
    return dict(
        backbone="resnet18",
        input_size=(128, 128),
        ts_channels=32,
        decoder_image_size=128,
        patch_size=16,
        enc_depth=2,
        enc_dim=64,
        enc_heads=4,
        dec_depth=1,
        dec_dim=64,
        dec_heads=4,
    )


def make_config(
    preset: str,
    tasks: Mapping[str, int] | Sequence[Sequence[Any]] | None = None,
    **overrides: Any,
) -> ModelConfig:
    """The ModelConfig of a preset with `tasks` and field overrides applied.

    Args:
        preset: a name from `list_presets()`.
        tasks: task name -> channels; `DEFAULT_TASKS` when None.
        **overrides: any ModelConfig field except `preset` and `tasks`.

    Raises:
        ConfigError: unknown preset, task or override, or an inconsistent result.
    """
    if preset not in _PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(list_presets())}")
    names = {f.name for f in dataclasses.fields(ModelConfig)} - {"preset", "tasks"}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {unknown}; valid options: {', '.join(sorted(names))}"
        )
    fields = _PRESETS[preset]()
    fields.update(overrides)
    return ModelConfig(preset=preset, tasks=DEFAULT_TASKS if tasks is None else tasks, **fields)
