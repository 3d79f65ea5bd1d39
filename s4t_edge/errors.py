"""One error hierarchy for the whole project.

Every error carries a message that tells the user what to do next; the CLI prints it on one line
and exits with a non-zero code instead of showing a traceback.
"""

from __future__ import annotations


class S4TError(Exception):
    """Base class of every error that s4t-edge raises on purpose (user mistakes, bad files)."""

    exit_code = 2


class ConfigError(S4TError):
    """An unknown preset, task, scope, option value or an inconsistent configuration."""


class DataError(S4TError):
    """A dataset file that is missing, unreadable or breaks the `.npz` contract."""


class ArtifactError(S4TError):
    """An export artifact or run directory that is missing, incomplete, tampered with or stale."""


class ExportError(S4TError):
    """Export or validation of the ONNX graphs failed."""


class BackendError(S4TError):
    """A runtime backend cannot be created or run (missing library, unsupported device, bad input)."""


class OutputPathError(S4TError):
    """An output path cannot be written."""
