from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_source():
    """A few synthetic source images at the tiny preset's size (rendered once per session)."""
    from s4t_edge.data import synth

    return synth("source", 24, 64, 0)


@pytest.fixture(scope="session")
def tiny_config():
    from s4t_edge.models import DEFAULT_TASKS, make_config

    return make_config("tiny", DEFAULT_TASKS)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny batches gain nothing from intra-op threads, and on a loaded machine OpenMP threads
    spin-waiting for each other make a 3 s test take 50 s."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
