"""The data options every command shares: `--protocol`, `--published-quirks`, `--predictions`.

Kept here so that train, eval, adapt and bench name data the same way with a two-line change
each; the spec grammar itself lives in `s4t_edge.data.spec`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from s4t_edge.errors import ConfigError

DATA_HELP = (
    "FILE.npz, nyud:ROOT[:SPLIT], pascal:ROOT[:SPLIT], taskonomy:ROOT[:SPLIT] or images:DIR "
    "(unlabeled); see README 'Your data'."
)


def protocol_option(what: str) -> Callable:
    return click.option(
        "--protocol",
        "data_protocol",
        default=None,
        help="Cross-dataset protocol preset: nyud-taskonomy, pascal-taskonomy, taskonomy-nyud "
        f"(class remap, tasks, sizes, normalisation, published settings) {what}.",
    )


quirks_option = click.option(
    "--published-quirks",
    is_flag=True,
    help="Read the data as the published loaders do where that changes the numbers (Taskonomy: "
    "bilinear label resizing, log depth without a mask, first 10% of the test split; raw "
    "normals) and, with a protocol, normalise the input as the target dataset.",
)

metrics_option = click.option(
    "--metrics",
    "metric_set",
    type=click.Choice(["ours", "published"]),
    default="ours",
    show_default=True,
    help="ours: mIoU, depth RMSE/abs-rel, normals angle, edge F1/L1; published: the published "
    "S4T metrics (depth RMSE and edge L1 after a per-batch-of-8 scale-and-shift fit, in "
    "dataset order).",
)

predictions_option = click.option(
    "--predictions",
    "predictions_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write every image's predictions here (DIR/<task>/<id>.png|.npy); needed for "
    "unlabeled data (images:DIR), whose metrics are skipped.",
)


def protect_data(spec: Any, what: str) -> None:
    """Register a data spec's file or folder as an input (`s4t_edge.outputs`): no output of the
    command may land on it or inside it.  A spec that does not parse is left to the reader,
    which says what is wrong with it."""
    from s4t_edge.errors import S4TError
    from s4t_edge.outputs import protect

    if spec is None:
        return
    try:
        from s4t_edge.data.spec import parse_spec

        protect(parse_spec(spec).root, what)
    except S4TError:
        protect(spec, what)


def resolve_protocol(name: str | None, recorded: Mapping[str, Any] | None) -> Any:
    """The protocol given on the command line, else the one the run / artifact recorded."""
    from s4t_edge.data import get_protocol

    if name is not None:
        return get_protocol(name)
    return get_protocol(recorded) if recorded else None


def input_normalisation(src: Any, protocol: Any, quirks: bool) -> tuple[Any, Any] | None:
    """(mean, std) of the data's own dataset when the published quirks ask for it, else None.

    The published protocols normalise target images as the target dataset (Taskonomy [-1, 1],
    NYUD ImageNet) whatever the source model was trained with (facts §7.2).
    """
    if not quirks or protocol is None:
        return None
    kind = (getattr(src, "meta", None) or {}).get("dataset")
    if kind not in ("nyud", "pascal", "taskonomy"):
        return None
    side = protocol.side(kind)
    return tuple(side.mean), tuple(side.std)


def prediction_sink(
    out: Path | None, src: Any, kinds: Mapping[str, str], command: str
) -> tuple[Any, Callable[[Any, dict], None] | None]:
    """A (writer, on_batch) pair for --predictions; unlabeled data without it is refused by eval."""
    if out is None:
        if not src.tasks_present() and command == "eval":
            raise ConfigError(
                "the data has no labels, so there are no metrics to compute; give "
                "--predictions DIR to write the predictions"
            )
        return None, None
    from s4t_edge.data.predictions import PredictionWriter
    from s4t_edge.data.source import sample_ids

    writer = PredictionWriter(out, kinds)
    done = [0]

    def on_batch(batch: Any, preds: dict) -> None:
        n = len(batch)
        writer.write(sample_ids(batch, done[0]), {t: v[:n] for t, v in preds.items()})
        done[0] += n

    return writer, on_batch


def data_record(spec: Any, src: Any) -> dict[str, Any]:
    """What a run records about data it was trained on (path + sha256 for a file)."""
    from s4t_edge.data import Dataset

    p = Path(str(spec))
    if isinstance(src, Dataset) and p.is_file():
        from s4t_edge.utils import sha256_file

        return {"path": str(p.resolve()), "sha256": sha256_file(p), "meta": dict(src.meta)}
    meta = {k: v for k, v in dict(src.meta).items() if k != "ids"}
    return {"spec": str(spec), "meta": meta}
