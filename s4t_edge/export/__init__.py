"""Export: adaptable-parameter scopes, frozen-prefix partition, ONNX graphs, manifest, validation.

    from s4t_edge.export import export_run, ExportConfig
    export_run("runs/tiny", "artifacts/tiny", ExportConfig(scope="norm@backbone.layer4"))

Imports torch lazily: `import s4t_edge.export` itself is cheap.
"""

from __future__ import annotations

from s4t_edge.export.exporter import ExportConfig, ExportResult, export_model, export_run
from s4t_edge.export.scopes import BUILTIN_SCOPES, DEFAULT_SCOPE, Scope, select_theta

__all__ = [
    "BUILTIN_SCOPES",
    "DEFAULT_SCOPE",
    "ExportConfig",
    "ExportResult",
    "Scope",
    "export_model",
    "export_run",
    "select_theta",
]
