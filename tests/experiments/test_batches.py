"""crbp_panoptic.experiments.batches: random Detectron2 training batches."""

import math

import torch

from crbp_panoptic.experiments.batches import random_batch


def test_random_batch_has_detectron2_training_format_and_repeats_with_its_seed():
    batch = random_batch(2, (48, 80), instances=5, num_classes=7, num_stuff=4, seed=3)
    again = random_batch(2, (48, 80), instances=5, num_classes=7, num_stuff=4, seed=3)
    other = random_batch(2, (48, 80), instances=5, num_classes=7, num_stuff=4, seed=4)
    assert len(batch) == 2
    assert not torch.equal(batch[0]["image"], other[0]["image"])
    for x, y in zip(batch, again):
        assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 48, 80)
        assert torch.equal(x["image"], y["image"])
        assert x["height"] == 48 and x["width"] == 80
        inst = x["instances"]
        assert len(inst) == 5 and inst.image_size == (48, 80)
        assert int(inst.gt_classes.max()) < 7
        masks, boxes = inst.gt_masks.tensor, inst.gt_boxes.tensor
        assert masks.shape == (5, 48, 80) and masks.dtype == torch.bool
        assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 48).all() and (boxes[:, :2] >= 0).all()
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys) > 0  # the ellipse's centre pixel at least
            assert xs.min() >= math.floor(x0) and xs.max() <= math.ceil(x1)
            assert ys.min() >= math.floor(y0) and ys.max() <= math.ceil(y1)
        assert x["sem_seg"].shape == (48, 80) and x["sem_seg"].dtype == torch.int64
        assert 0 <= int(x["sem_seg"].min()) and int(x["sem_seg"].max()) < 4
