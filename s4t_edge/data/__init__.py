"""Multi-task data: the `.npz` dataset file, preprocessing and synthetic scenes with domain shifts.

numpy only -- the on-device runtime imports this package where torch is not installed.
"""

from __future__ import annotations

from s4t_edge.data.dataset import TASK_KEYS, Dataset, load_dataset, save_dataset
from s4t_edge.data.preprocess import preprocess
from s4t_edge.data.scenes import CLASS_NAMES, GENERATOR_VERSION, NUM_CLASSES
from s4t_edge.data.shifts import DOMAINS, Domain, get_domain, synth

__all__ = [
    "CLASS_NAMES",
    "DOMAINS",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "TASK_KEYS",
    "Dataset",
    "Domain",
    "get_domain",
    "load_dataset",
    "preprocess",
    "save_dataset",
    "synth",
]
