"""Counting the memory autograd keeps for the backward pass (benchmarks and tests)."""

from typing import Dict

import torch
from torch.autograd.graph import saved_tensors_hooks

__all__ = ["SavedTensorBytes"]


class SavedTensorBytes(saved_tensors_hooks):
    """Context manager: bytes of the distinct storages autograd saves while it is open.

    This is the activation memory of a training step that grows with the unrolled
    steps in BPTT and stays flat in RBP. Each storage is counted once, whichever
    tensors view it; the backward pass's transient buffers are not included.

    Example::

        with SavedTensorBytes() as saved:
            loss = model(x).sum()
        saved.bytes   # int
    """

    def __init__(self):
        self._sizes: Dict[int, int] = {}
        super().__init__(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        self._sizes[ptr] = max(self._sizes.get(ptr, 0), storage.nbytes())
        return t

    def __enter__(self):
        super().__enter__()
        return self

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())
