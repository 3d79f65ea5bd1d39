"""s4t-edge: ONNX/TensorRT deployment of S4T test-time training for multi-task dense prediction."""

from __future__ import annotations

__version__ = "0.1.0"
