"""Test settings shared by the whole pytest run."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _deterministic_threads():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
