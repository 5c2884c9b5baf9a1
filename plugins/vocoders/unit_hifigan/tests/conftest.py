"""Shared test setup of the unit HiFi-GAN plugin."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny convs here gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them
    10x slower; run each test single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
