"""Write the partitioned torch graphs as ONNX files with stable bytes.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with our translation of the
bilinear resize.  Debug metadata (stack traces, file paths) is stripped so that the same inputs
give the same file on any machine: the manifest's sha256 then identifies a graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from s4t_edge.errors import ExportError

DEFAULT_OPSET = 18
_FOLD_LIMIT = 65536  # elements


def _strip(model) -> None:
    model.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        vi.doc_string = ""
        del vi.metadata_props[:]
    for init in model.graph.initializer:
        del init.metadata_props[:]


def export_graph(
    gm: torch.nn.Module,
    example_args: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
):
    """Export `gm` to `path` and return the saved `onnx.ModelProto`."""
    import onnx

    from s4t_edge.export.decompositions import onnx_translations

    quiet = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                gm,
                tuple(example_args),
                dynamo=True,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                custom_translation_table=onnx_translations(),
                optimize=False,
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - exporter failures carry long internal traces
        raise ExportError(
            f"ONNX export of {Path(path).name} failed: {type(e).__name__}: {str(e)[:300]}"
        ) from e
    import onnxscript.optimizer

    # Fold constants, but only small ones: folding e.g. zeros(...).scatter(...) would store
    # batch-sized tensors in the file (megabytes per graph at 256x256).
    onnxscript.optimizer.optimize(
        prog.model, input_size_limit=_FOLD_LIMIT, output_size_limit=_FOLD_LIMIT
    )
    model = prog.model_proto
    _strip(model)
    names_in = [i.name for i in model.graph.input]
    if names_in != list(input_names):
        raise ExportError(f"ONNX export renamed the inputs of {Path(path).name}: {names_in[:4]}...")
    onnx.save_model(model, str(path))
    return model
