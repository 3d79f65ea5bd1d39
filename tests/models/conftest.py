"""Shared fixtures for the model tests: few threads (the CPU is shared) and fixed seeds."""

from __future__ import annotations

import pytest
import torch

from s4t_edge.models import DEFAULT_TASKS, build_model


@pytest.fixture(autouse=True)
def _few_threads_and_seed():
    # One thread: the 2-core CI machine is shared and OpenMP spinning makes 2 threads far slower
    # under load.  Restored afterwards so tests of other packages in the same process are unaffected.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def tiny():
    return build_model("tiny", DEFAULT_TASKS).eval()


@pytest.fixture
def tiny_inputs(tiny):
    g = torch.Generator().manual_seed(1)
    img = torch.randn(2, 3, 64, 64, generator=g)
    noise = torch.rand(tiny.mask_noise_shape(2), generator=g)
    return img, noise
