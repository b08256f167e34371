"""Training batches that can start at any iteration, so that ``--resume`` continues exactly.

Detectron2's training loader (``build_detection_train_loader``) is an infinite stream: the
sampler's seeded order of dataset indices; each element read and augmented by the mapper
in a DataLoader worker, with that worker's random numbers (or, without workers, with the
training process's own, between the model's draws); and, with aspect-ratio grouping,
elements held back until a batch of the same orientation is complete. None of this is in
a checkpoint, so a resumed run starts the stream again from its beginning.

:class:`ResumableTrainLoader` yields the same kind of batches, built from the same parts
(the config's dataset, ``DatasetMapper`` and sampler), with two changes that make batch
``b`` a function of the sampler's seed and ``b`` alone:

* element ``p`` of this process's share of the sampler's stream is mapped with Python's,
  NumPy's and torch's (CPU) global generators seeded from ``(seed, rank, p)``, and the
  caller's generators are put back as they were. The batches therefore do not depend on
  the number of workers, and the model's random numbers do not depend on the data.
* :meth:`~ResumableTrainLoader.start_at` replays the batching on the indices alone (each
  record's "width" and "height" give its orientation): it finds where in the stream batch
  ``b`` begins and which earlier elements are still waiting for a batch, maps those again
  and goes on from there. Skipping costs one pass over indices, not reading any image.

Exactness assumes that the mapper keeps every element (Detectron2's ``DatasetMapper``
does; an element it drops is skipped, as in Detectron2, but the replay cannot know about
it) and that the number of processes is the one of the run being resumed.
"""

import contextlib
import itertools
import logging
import operator
import random
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata

from detectron2.data import DatasetFromList
from detectron2.data.build import _train_loader_from_config
from detectron2.utils import comm
from detectron2.utils.serialize import PicklableWrapper

__all__ = ["ResumableTrainLoader", "build_resumable_train_loader", "element_seed", "seeded_rng"]

logger = logging.getLogger(__name__)

#: Orientation of a record whose "width"/"height" are unknown until it is mapped.
_UNKNOWN = -1


def element_seed(seed: int, rank: int, position: int) -> int:
    """The seed of element ``position`` of process ``rank``'s stream (a 32-bit integer)."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(position)]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Seed Python's, NumPy's and torch's CPU global generators with ``seed`` inside the
    block, and restore the states they had before on leaving it (the CUDA generators are
    not touched)."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _orientation(record) -> int:
    """Detectron2's aspect-ratio group of a record: 0 if wider than high, else 1."""
    if "width" not in record or "height" not in record:
        return _UNKNOWN
    return 0 if record["width"] > record["height"] else 1


class _MappedStream(torchdata.IterableDataset):
    """``(position, index, mapped element)`` for positions ``start, start + 1, ...`` of a
    process's share of the sampler's stream; a DataLoader worker takes every
    ``num_workers``-th position, so the loader delivers them in order."""

    def __init__(self, dataset, mapper, sampler, seed: int, rank: int, start: int):
        self.dataset = dataset
        self.mapper = mapper
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.start = start

    def map(self, position: int, index: int):
        with seeded_rng(element_seed(self.seed, self.rank, position)):
            return self.mapper(self.dataset[index])

    def __iter__(self):
        worker = torchdata.get_worker_info()
        offset, step = (0, 1) if worker is None else (worker.id, worker.num_workers)
        # TrainingSampler.__iter__ already yields only this rank's share.
        positions = itertools.islice(enumerate(self.sampler), self.start + offset, None, step)
        for position, index in positions:
            yield position, index, self.map(position, index)


class ResumableTrainLoader:
    """An iterable of training batches (lists of mapped dataset dicts), like Detectron2's
    ``build_detection_train_loader``, that can begin at any batch (:meth:`start_at`).

    Args:
        dataset (list[dict]): the dataset's records.
        mapper (callable): record -> model input (``DatasetMapper``); its random numbers
            come from the generators seeded per element.
        sampler (torch.utils.data.Sampler): an infinite index stream whose ``__iter__``
            yields this process's share (Detectron2's training samplers).
        total_batch_size (int): images per iteration over all processes.
        aspect_ratio_grouping (bool): batch wide and tall images separately, as Detectron2.
        num_workers (int): DataLoader worker processes (0: map in this process).
        seed (int): the seed of the per-element generators; default: the sampler's
            ``_seed`` (Detectron2's samplers keep it there), else a shared random seed.
    """

    def __init__(
        self,
        dataset: Sequence[dict],
        mapper,
        sampler,
        total_batch_size: int,
        *,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        seed: Optional[int] = None,
    ):
        world_size = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={total_batch_size} must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        if num_workers < 0:
            raise ValueError(f"DATALOADER.NUM_WORKERS={num_workers}; must be >= 0")
        self.batch_size = total_batch_size // world_size
        self.rank = comm.get_rank()
        self.num_workers = num_workers
        self.grouping = aspect_ratio_grouping
        self.sampler = sampler
        self.seed = int(seed if seed is not None else self._sampler_seed(sampler))
        self._orientations = np.asarray([_orientation(r) for r in dataset], dtype=np.int8)
        self._dataset = DatasetFromList(list(dataset), copy=False)
        self._mapper = PicklableWrapper(mapper)
        self._start = 0
        self._started = False

    @staticmethod
    def _sampler_seed(sampler) -> int:
        seed = getattr(sampler, "_seed", None)
        return int(seed) if seed is not None else int(comm.shared_random_seed())

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """What a checkpoint needs to rebuild the same stream: the seeds (they differ from
        run to run when ``SEED`` < 0) and the process count the replay assumes."""
        state = {"seed": self.seed, "world_size": comm.get_world_size()}
        for key in ("_seed", "_seed_subset"):
            if hasattr(self.sampler, key):
                state["sampler" + key] = int(getattr(self.sampler, key))
        if hasattr(self.sampler, "_indexes_subset"):  # RandomSubsetTrainingSampler
            state["sampler_indexes_subset"] = self.sampler._indexes_subset.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Take the seeds of a checkpoint's stream (before any batch is drawn)."""
        self._check_not_started("load_state_dict")
        self.seed = int(state["seed"])
        for key in ("_seed", "_seed_subset"):
            if "sampler" + key in state and hasattr(self.sampler, key):
                setattr(self.sampler, key, int(state["sampler" + key]))
        if "sampler_indexes_subset" in state and hasattr(self.sampler, "_indexes_subset"):
            self.sampler._indexes_subset = state["sampler_indexes_subset"]
        if state.get("world_size", comm.get_world_size()) != comm.get_world_size():
            logger.warning(
                "The checkpoint's run used %d processes, this one %d: the data order differs "
                "from the interrupted run's from here on.",
                state["world_size"],
                comm.get_world_size(),
            )

    def start_at(self, batch: int) -> None:
        """Make the next iteration over this loader begin with batch number ``batch``."""
        self._check_not_started("start_at")
        if batch < 0:
            raise ValueError(f"batch={batch}; must be >= 0")
        self._start = int(batch)

    def _check_not_started(self, what: str) -> None:
        if self._started:
            raise RuntimeError(
                f"ResumableTrainLoader.{what}: batches were already drawn; "
                "resume (or load) before training starts"
            )

    # ------------------------------------------------------------------ batches

    def __iter__(self) -> Iterator[List[dict]]:
        # A generator: nothing runs (no worker starts) until the first batch is asked for,
        # so the trainer can still move the start after creating its iterator.
        return self._batches()

    def _stream(self, start: int) -> _MappedStream:
        return _MappedStream(self._dataset, self._mapper, self.sampler, self.seed, self.rank, start)

    def _group(self, index: int, element=None, mapped=None) -> int:
        """The batch group of dataset record ``index``: its orientation with aspect-ratio
        grouping (from the record, else from the mapped ``element`` or ``mapped()``)."""
        if not self.grouping:
            return 0
        group = int(self._orientations[index])
        if group == _UNKNOWN:
            group = _orientation(element if element is not None else mapped())
        return group

    def replay(self, batch: int):
        """Where the stream stands once ``batch`` batches have been drawn.

        Returns:
            (int, list[list[(int, int)]]): the position of the next element, and per
            aspect-ratio group the (position, index) of the elements waiting in it.
        """
        groups: List[list] = [[], []]
        stream, position, done = self._stream(0), 0, 0
        indices = enumerate(self.sampler)
        while done < batch:
            position, index = next(indices)
            group = groups[self._group(index, mapped=lambda: stream.map(position, index))]
            group.append((position, index))
            if len(group) == self.batch_size:
                group.clear()
                done += 1
        return (position + 1 if batch else 0), groups

    def _elements(self, start: int):
        stream = self._stream(start)
        if self.num_workers == 0:
            yield from stream
            return
        loader = torchdata.DataLoader(
            stream,
            batch_size=1,
            collate_fn=operator.itemgetter(0),  # no collation: the elements themselves
            num_workers=self.num_workers,
            # The loader draws its workers' base seed from this generator, not from the
            # global one the model uses (the elements are seeded per position anyway).
            generator=torch.Generator().manual_seed(self.seed),
        )
        yield from loader

    def _batches(self) -> Iterator[List[dict]]:
        self._started = True
        start, waiting = self.replay(self._start)
        stream = self._stream(0)
        groups = [[stream.map(p, i) for p, i in group] for group in waiting]
        expected = start
        for position, index, element in self._elements(start):
            if position != expected:  # the DataLoader keeps worker order; check it
                raise RuntimeError(f"training data out of order: {position}, not {expected}")
            expected += 1
            if element is None:
                logger.warning("The mapper dropped element %d (dataset index %d)", position, index)
                continue
            group = groups[self._group(index, element)]
            group.append(element)
            if len(group) == self.batch_size:
                yield group[:]
                group.clear()


def build_resumable_train_loader(cfg, mapper=None) -> ResumableTrainLoader:
    """:class:`ResumableTrainLoader` from the config, with the dataset, mapper and sampler
    Detectron2's ``build_detection_train_loader(cfg, mapper)`` would use."""
    kwargs = _train_loader_from_config(cfg, mapper)
    return ResumableTrainLoader(
        kwargs["dataset"],
        kwargs["mapper"],
        kwargs["sampler"],
        kwargs["total_batch_size"],
        aspect_ratio_grouping=kwargs["aspect_ratio_grouping"],
        num_workers=kwargs["num_workers"],
    )
