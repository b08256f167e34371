"""Random Detectron2 training batches of any size (for benchmarks: no dataset needed)."""

import math
from typing import List, Sequence

import torch

from detectron2.structures import BitMasks, Boxes, Instances


def _ellipses(n, h, w, side, g):
    """Boxes with log-uniform sides in [side/16, side/2] and the ellipse inscribed in each."""
    bw, bh = (
        side * torch.exp(torch.empty(n).uniform_(math.log(1 / 16), math.log(1 / 2), generator=g))
        for _ in range(2)
    )
    x0 = torch.rand(n, generator=g) * (w - bw)
    y0 = torch.rand(n, generator=g) * (h - bh)
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    cx, cy = (x0 + bw / 2).view(n, 1, 1), (y0 + bh / 2).view(n, 1, 1)
    rx, ry = (bw / 2).view(n, 1, 1), (bh / 2).view(n, 1, 1)
    masks = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return boxes, masks


def random_batch(
    num_images: int, size: Sequence[int], *, instances: int = 8, num_classes: int = 80,
    num_stuff: int = 54, seed: int = 0, device="cpu",
) -> List[dict]:  # fmt: skip
    """Random Detectron2 training inputs (``DatasetMapper``'s format) of ``size`` (H, W).

    Each image has ``instances`` boxes (sides 1/16 to 1/2 of the shorter side, log-uniform),
    the inscribed ellipses as masks, classes below ``num_classes``, and semantic labels below
    ``num_stuff`` on 32x32 blocks; the same ``seed`` gives the same batch, on ``device``.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = size
    batch = []
    for _ in range(num_images):
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        boxes, masks = _ellipses(instances, h, w, min(h, w), g)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, num_classes, (instances,), generator=g)
        inst.gt_masks = BitMasks(masks)
        coarse = torch.randint(0, num_stuff, (math.ceil(h / 32), math.ceil(w / 32)), generator=g)
        sem = coarse.repeat_interleave(32, 0).repeat_interleave(32, 1)[:h, :w].contiguous()
        batch.append(dict(image=image.to(device), instances=inst.to(device), height=h, width=w))
        batch[-1]["sem_seg"] = sem.to(device)
    return batch
