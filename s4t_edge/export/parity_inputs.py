"""The images every parity check runs on: synthetic source scenes at the model's input size.

The exporter's validation (`validate.reference_outputs`) computes the PyTorch references on them
and stores both in ``parity.safetensors``, which `s4t-edge check` replays through ONNX Runtime.
A module of its own so that validation does not import the exporter, which imports validation.
"""

from __future__ import annotations


def parity_batch(model_cfg, batch: int, seed: int):
    """Real (synthetic-scene) images for parity checks: uint8 NHWC and the preprocessed tensor."""
    import numpy as np

    from s4t_edge.data import preprocess, synth

    h, w = model_cfg.input_size
    ds = synth("source", batch, (h, w) if h != w else h, seed)
    img = ds.image
    x = preprocess(img, model_cfg.mean, model_cfg.std)
    return img, np.ascontiguousarray(x, dtype=np.float32)
