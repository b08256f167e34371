"""crbp_panoptic.engine.train_loader: the training batches from any batch on are those of the
uninterrupted stream, whatever the workers, and mapping draws nothing from the caller's
random numbers."""

import itertools
import random

import numpy as np
import pytest
import torch

from detectron2.data.samplers import TrainingSampler

from crbp_panoptic.engine.train_loader import ResumableTrainLoader


def _records(n=7):
    # Mixed orientations, so that aspect-ratio grouping holds elements back; one record
    # without a size, whose orientation is only known once it is mapped.
    sizes = [(64, 32), (32, 64), (48, 40), (40, 48), (32, 64), (64, 48), (20, 30)]
    records = [{"id": i, "width": w, "height": h} for i, (w, h) in enumerate(sizes[:n])]
    del records[-1]["width"], records[-1]["height"]
    return records


def _mapper(record):
    # An augmentation's draws from the three global generators Detectron2's transforms use.
    out = dict(record)
    out.setdefault("width", 30)
    out.setdefault("height", 20)
    out["draws"] = (random.random(), float(np.random.rand()), float(torch.rand(())))
    return out


def _loader(num_workers=0, grouping=True, batch=2, seed=5):
    return ResumableTrainLoader(
        _records(),
        _mapper,
        TrainingSampler(len(_records()), seed=seed),
        batch,
        aspect_ratio_grouping=grouping,
        num_workers=num_workers,
    )


def _take(loader, n, start=0):
    loader.start_at(start)
    return list(itertools.islice(iter(loader), n))


@pytest.mark.parametrize("grouping", [True, False])
def test_batches_from_any_start_equal_the_uninterrupted_stream(grouping):
    full = _take(_loader(grouping=grouping), 12)
    assert any(b[0]["id"] != b[1]["id"] - 1 for b in full)  # shuffled, and grouped
    if grouping:  # every batch has one orientation
        for b in full:
            assert len({d["width"] > d["height"] for d in b}) == 1, b
    for start in (1, 3, 7, 11):
        assert _take(_loader(grouping=grouping), 12 - start, start) == full[start:], start


def test_workers_give_the_same_batches_as_the_main_process():
    full = _take(_loader(num_workers=0), 8)
    assert _take(_loader(num_workers=2), 8) == full
    assert _take(_loader(num_workers=2), 5, start=3) == full[3:]


def test_mapping_leaves_the_callers_random_numbers_alone():
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    batches = _take(_loader(), 4, start=2)
    assert len(batches) == 4
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_checkpointed_seed_restores_the_stream():
    full = _take(_loader(seed=5), 6)
    other = _loader(seed=9)  # a run with SEED < 0 draws another sampler seed
    assert _take(_loader(seed=9), 6) != full
    other.load_state_dict(_loader(seed=5).state_dict())
    assert _take(other, 4, start=2) == full[2:]


def test_start_after_drawing_is_an_error():
    loader = _loader()
    it = iter(loader)
    next(it)
    with pytest.raises(RuntimeError, match="already drawn"):
        loader.start_at(3)


def test_batch_size_must_divide_over_processes():
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH=0"):
        _loader(batch=0)
