"""Multi-task data: the `.npz` dataset file, real datasets streamed from disk (NYUD-v2,
PASCAL-Context, Taskonomy, image folders), the published cross-dataset protocols, preprocessing and
synthetic scenes with domain shifts.

numpy (and Pillow, imported where images are read) only -- the on-device runtime imports this
package where torch is not installed.
"""

from __future__ import annotations

from s4t_edge.data.dataset import TASK_KEYS, Dataset, load_dataset, save_dataset
from s4t_edge.data.preprocess import preprocess
from s4t_edge.data.protocols import PROTOCOLS, Protocol, get_protocol
from s4t_edge.data.scenes import CLASS_NAMES, GENERATOR_VERSION, NUM_CLASSES
from s4t_edge.data.shifts import DOMAINS, Domain, domains_of_kind, get_domain, synth
from s4t_edge.data.source import StreamSource
from s4t_edge.data.spec import open_data, parse_spec

__all__ = [
    "CLASS_NAMES",
    "DOMAINS",
    "domains_of_kind",
    "GENERATOR_VERSION",
    "NUM_CLASSES",
    "PROTOCOLS",
    "TASK_KEYS",
    "Dataset",
    "Domain",
    "Protocol",
    "StreamSource",
    "get_domain",
    "get_protocol",
    "load_dataset",
    "open_data",
    "parse_spec",
    "preprocess",
    "save_dataset",
    "synth",
]
