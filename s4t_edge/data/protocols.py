"""The published cross-dataset protocols of S4T as presets (numpy-free, torch-free).

A protocol fixes everything that must agree between pretraining on the *source* dataset and
test-time training on the *target* one: the tasks and their order, the shared class list and how
each dataset's labels map onto it, input sizes and normalisation per side, loss weights and the
published optimisation and TTT settings.  `s4t-edge train/eval/adapt/data import --protocol NAME`
applies one; the run's config.json and the artifact's manifest.json record it.

Figures come from the facts sheet of the published code (shared/datasets.md §0, §3-§5).  Where
the published code cannot be expressed in s4t-edge, the preset says so in `notes` instead of
pretending: the uncertainty-weighted (AWL) Taskonomy loss, channels copied by position across
datasets whose task orders differ (§7.1; s4t-edge keeps one model and maps tasks by name), the
Taskonomy flip that does not negate the normal (§7.4; s4t-edge's flip negates it) and the normal
loss over the image width (§7.5; s4t-edge's is over channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s4t_edge.errors import ConfigError

#: Dataset kinds a protocol side can name (the `KIND:` of a `--data` spec).
DATASETS = ("nyud", "pascal", "taskonomy")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Taskonomy maps [0, 255] to [-1, 1]: (x/255 - 0.5) / 0.5.
TASKONOMY_MEAN = (0.5, 0.5, 0.5)
TASKONOMY_STD = (0.5, 0.5, 0.5)

# Label names of each dataset's own ids (after the loader's own shift, before any protocol remap).
NYUD40_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
VOC21_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
# Raw values 2..17 are inferred from the published evaluation names (facts sheet §3); 0 and 1 are
# never named and every protocol drops them.
TASKONOMY18_NAMES = (
    "raw0", "raw1", "bottle", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
)  # fmt: skip


@dataclass(frozen=True)
class Side:
    """One dataset of a protocol, as pretraining (source) or adaptation (target) reads it."""

    # dataset kind: nyud, pascal or taskonomy
    dataset: str
    # task kinds in the published head order of this dataset (fixes ts_comp / joint-decoder layout)
    tasks: tuple[str, ...]
    # the split the published configs read on this side for training / for testing
    train_split: str
    test_split: str
    # input size (H, W) of the published configs on this side (TRAIN.SCALE / resize_scale)
    size: tuple[int, int]
    # geometry that brings a native image to `size`: "pad" (centred, ignore-filled) or "resize"
    fit: str
    # input normalisation (x/255 - mean) / std of this dataset in the published code
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # the dataset's own label ids of the shared classes, in the order of Protocol.classes
    class_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("tasks", "size", "mean", "std", "class_ids"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Side:
        try:
            return cls(
                dataset=str(d["dataset"]),
                tasks=tuple(d["tasks"]),
                train_split=str(d["train_split"]),
                test_split=str(d["test_split"]),
                size=tuple(int(v) for v in d["size"]),
                fit=str(d["fit"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                class_ids=tuple(int(v) for v in d["class_ids"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"bad protocol side {dict(d)!r}: {e}") from None


@dataclass(frozen=True)
class Protocol:
    """A published cross-dataset protocol: source pretraining, then S4T adaptation on the target."""

    # preset name (`--protocol NAME`)
    name: str
    # the paper's name of the shift
    title: str
    source: Side
    target: Side
    # names of the shared classes; semseg label k (after the remap) is classes[k]
    classes: tuple[str, ...]
    # S4T loss weights w_t by task kind (pretraining, and the test-time loss as w_t ** power)
    loss_weights: dict[str, float]
    # test-time loss weight exponent (the published code applies w_t twice for NYUD targets)
    weight_power: float = 2.0
    # weight of the aux/joint losses in pretraining and of the test-time loss
    lambda_: float = 0.01
    # positives weigh edge_pos_weight times more than negatives (published 0.95 / 0.05 = 19)
    edge_pos_weight: float = 19.0
    # "l1" (NYUD/PASCAL: L1 after normalising the prediction) or "cosine" (Taskonomy: 1 - cos)
    normals_loss: str = "l1"
    # published pretraining: Adam, poly 0.9 to 0, no warm-up, batch 8 on one GPU
    pretrain: dict[str, Any] = field(
        default_factory=lambda: {
            "optimizer": "adam",
            "lr": 2e-5,
            "weight_decay": 1e-6,
            "poly_power": 0.9,
            "warmup_steps": 0,
            "steps": 60000,
            "batch_size": 8,
        }
    )
    # published TTT: SGD without momentum, 40 steps on the first test batch of 8, episodic
    ttt: dict[str, Any] = field(
        default_factory=lambda: {
            "optimizer": "sgd",
            "lr": 2e-5,
            "momentum": 0.0,
            "weight_decay": 1e-6,
            "steps": 40,
            "batch_size": 8,
            "episodic": True,
            "schedule": "first test batch only, then one evaluation of the whole test set",
            "mask_ratio": 0.8,
        }
    )
    # what the published code does that this preset does not reproduce, and why
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for side in (self.source, self.target):
            if len(side.class_ids) != len(self.classes):
                raise ConfigError(
                    f"protocol {self.name}: {side.dataset} lists {len(side.class_ids)} class ids "
                    f"for {len(self.classes)} classes"
                )
        object.__setattr__(
            self, "loss_weights", {k: float(v) for k, v in self.loss_weights.items()}
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def side(self, dataset: str) -> Side:
        """The side that reads `dataset` (ConfigError when the protocol does not use it)."""
        for s in (self.source, self.target):
            if s.dataset == dataset:
                return s
        raise ConfigError(
            f"protocol {self.name} reads {self.source.dataset} (source) and "
            f"{self.target.dataset} (target), not {dataset}; choose another --protocol "
            f"({', '.join(PROTOCOLS)}) or none"
        )

    def role(self, dataset: str) -> str:
        """'source' or 'target'."""
        return "source" if self.side(dataset) is self.source else "target"

    def task_channels(self, side: Side | None = None) -> dict[str, int]:
        """{task: channels} in the head order of `side` (the source by default)."""
        s = side or self.source
        return {t: (self.num_classes if t == "semseg" else _FIXED[t]) for t in s.tasks}

    def s4t_dict(self) -> dict[str, Any]:
        """The `S4TConfig.to_dict()` form of the loss and TTT settings."""
        return {
            "lambda": self.lambda_,
            "loss_weights": {t: self.loss_weights[t] for t in self.source.tasks},
            "weight_power": self.weight_power,
            "edge_pos_weight": self.edge_pos_weight,
            "normals_loss": self.normals_loss,
            "steps": int(self.ttt["steps"]),
            "optimizer": {
                "name": self.ttt["optimizer"],
                "lr": self.ttt["lr"],
                "momentum": self.ttt["momentum"],
                "weight_decay": self.ttt["weight_decay"],
                "nesterov": False,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
            },
        }

    def train_defaults(self) -> dict[str, Any]:
        """`TrainConfig` fields of the published pretraining (explicit CLI options override)."""
        p = self.pretrain
        return {
            k: p[k]
            for k in ("lr", "weight_decay", "poly_power", "warmup_steps", "steps", "batch_size")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
            "classes": list(self.classes),
            "loss_weights": dict(self.loss_weights),
            "weight_power": self.weight_power,
            "lambda": self.lambda_,
            "edge_pos_weight": self.edge_pos_weight,
            "normals_loss": self.normals_loss,
            "pretrain": dict(self.pretrain),
            "ttt": dict(self.ttt),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Protocol:
        try:
            return cls(
                name=str(d["name"]),
                title=str(d.get("title", d["name"])),
                source=Side.from_dict(d["source"]),
                target=Side.from_dict(d["target"]),
                classes=tuple(d["classes"]),
                loss_weights=dict(d["loss_weights"]),
                weight_power=float(d.get("weight_power", 2.0)),
                lambda_=float(d.get("lambda", 0.01)),
                edge_pos_weight=float(d.get("edge_pos_weight", 19.0)),
                normals_loss=str(d.get("normals_loss", "l1")),
                pretrain=dict(d.get("pretrain", {})),
                ttt=dict(d.get("ttt", {})),
                notes=tuple(d.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"bad protocol record: {e}; re-create it from a preset name"
            ) from None


_FIXED = {"depth": 1, "normals": 3, "edge": 1}

_NYUD_TASKS = ("semseg", "depth", "normals", "edge")
_TASKONOMY_TASKS = (
    "depth",
    "edge",
    "normals",
    "semseg",
)  # depth_zbuffer, edge_occlusion, normal, segsem

_COMMON_NOTES = (
    "published model copies ts_comp and joint-decoder channels by position between datasets "
    "whose task orders differ (facts §7.1); s4t-edge keeps one model and maps tasks by name",
    "published Taskonomy training flips do not negate the normal x component and its normal loss "
    "is taken over the image width (facts §7.4, §7.5); s4t-edge fixes both, not offered",
    "published NYUD/PASCAL training augmentation (scale 0.5-2, random crop, photometric "
    "distortion) is not reproduced; s4t-edge trains on the evaluation geometry with flips",
)


def _nyud(size: tuple[int, int] = (448, 576)) -> dict[str, Any]:
    return dict(
        dataset="nyud",
        tasks=_NYUD_TASKS,
        train_split="train",
        test_split="val",
        size=size,
        fit="pad",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def _taskonomy(tasks: tuple[str, ...]) -> dict[str, Any]:
    return dict(
        dataset="taskonomy",
        tasks=tasks,
        train_split="tiny/train",
        test_split="custom/test",
        size=(256, 256),
        fit="resize",
        mean=TASKONOMY_MEAN,
        std=TASKONOMY_STD,
    )


# 3.1: NYUD <-> Taskonomy, 7 classes (NYUD ids after the loader's -1 shift; Taskonomy raw values)
_NYU_TASK_CLASSES = ("refrigerator", "table", "toilet", "sofa", "bed", "sink", "chair")
_NYU_IDS = (23, 6, 32, 5, 3, 33, 4)
_TASK_IDS_FOR_NYU = (14, 7, 8, 4, 6, 13, 3)
# 3.2: PASCAL -> Taskonomy, 6 classes (class 2 is bottle; the published printout says "toilet")
_VOC_TASK_CLASSES = ("table", "tv", "bottle", "sofa", "pottedplant", "chair")
_VOC_IDS = (11, 20, 5, 18, 16, 9)
_TASK_IDS_FOR_VOC = (7, 9, 2, 4, 5, 3)

_AWL_NOTE = (
    "published Taskonomy-side loss is an uncertainty weighting (AWL, sigma learned, not in the "
    "checkpoint); s4t-edge uses the fixed weights above"
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="nyud-taskonomy",
            title="NYUD -> Taskonomy",
            source=Side(**_nyud(), class_ids=_NYU_IDS),
            target=Side(**_taskonomy(_TASKONOMY_TASKS), class_ids=_TASK_IDS_FOR_NYU),
            classes=_NYU_TASK_CLASSES,
            loss_weights={"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0},
            notes=(*_COMMON_NOTES, "published TTT on Taskonomy: " + _AWL_NOTE),
        ),
        Protocol(
            name="pascal-taskonomy",
            title="PASCAL-Context -> Taskonomy",
            source=Side(
                dataset="pascal",
                tasks=("semseg", "normals", "edge"),
                train_split="train",
                test_split="val",
                size=(512, 512),
                fit="pad",
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                class_ids=_VOC_IDS,
            ),
            target=Side(**_taskonomy(("edge", "normals", "semseg")), class_ids=_TASK_IDS_FOR_VOC),
            classes=_VOC_TASK_CLASSES,
            loss_weights={"semseg": 1.0, "normals": 10.0, "edge": 50.0},
            notes=(*_COMMON_NOTES, "published TTT on Taskonomy: " + _AWL_NOTE),
        ),
        Protocol(
            name="taskonomy-nyud",
            title="Taskonomy -> NYUD",
            source=Side(**_taskonomy(_TASKONOMY_TASKS), class_ids=_TASK_IDS_FOR_NYU),
            target=Side(**_nyud(), class_ids=_NYU_IDS),
            classes=_NYU_TASK_CLASSES,
            # the NYUD-target TTT weights (w_t ** 2 * 0.01) are exact; pretraining uses them too
            loss_weights={"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0},
            normals_loss="cosine",
            notes=(*_COMMON_NOTES, "published Taskonomy pretraining: " + _AWL_NOTE),
        ),
    )
}


def get_protocol(name: str | Protocol | Mapping[str, Any] | None) -> Protocol | None:
    """A preset by name (or a stored record, or a Protocol); None passes through.

    Raises:
        ConfigError: an unknown name, naming the presets.
    """
    if name is None or isinstance(name, Protocol):
        return name
    if isinstance(name, Mapping):
        return Protocol.from_dict(name)
    if name not in PROTOCOLS:
        raise ConfigError(
            f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)} "
            "(facts: shared/datasets.md §0)"
        )
    return PROTOCOLS[name]
