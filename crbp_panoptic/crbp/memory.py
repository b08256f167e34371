"""Counting the memory autograd keeps for the backward pass (benchmarks and tests)."""

from typing import Dict, Hashable

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
        self._sizes: Dict[Hashable, int] = {}
        super().__init__(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except RuntimeError:  # some tensors saved under forward-mode AD expose no storage
            key, size = ("tensor", id(t)), t.numel() * t.element_size()
        self._sizes[key] = max(self._sizes.get(key, 0), size)
        return t

    def __enter__(self):
        super().__enter__()
        return self

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())
