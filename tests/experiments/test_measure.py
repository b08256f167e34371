"""crbp_panoptic.experiments.measure: the allocator peak of a step."""

import torch

from crbp_panoptic.experiments.measure import peak_allocated_bytes

MIB = 1 << 20


def test_peak_allocated_bytes_follows_allocations_and_frees():
    def step():
        a = torch.empty(MIB, dtype=torch.uint8)
        b = torch.empty(2 * MIB, dtype=torch.uint8)
        del a, b  # 3 MiB at the peak
        return torch.empty(MIB, dtype=torch.uint8)

    assert peak_allocated_bytes(step) == 3 * MIB


def test_peak_allocated_bytes_ignores_tensors_alive_before_the_call():
    before = torch.empty(8 * MIB, dtype=torch.uint8)
    # an in-place update allocates nothing but the wrapped scalar (a few bytes)
    assert peak_allocated_bytes(lambda: before.add_(1)) < 64
