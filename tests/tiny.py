"""Test helpers: tiny models from the real YAML configs, and tiny training batches."""

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# Shrinks a real config to a model that runs a training step in well under a second on a
# CPU: ResNet-18, 32 FPN channels, few proposals, few recurrent steps.
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "MODEL.FPN.OUT_CHANNELS",
    32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    100,
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    20,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    32,
    "MODEL.ROI_HEADS.NUM_CLASSES",
    3,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    0.05,
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    32,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    32,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    3,
    "MODEL.CRBP.STEPS",
    3,
    "MODEL.CRBP.NEUMANN_STEPS",
    3,
    "MODEL.CRBP.NUM_GROUPS",
    8,
]


def tiny_cfg(config_file, *opts):
    """A config (not frozen) from ``configs/<config_file>``, shrunk by ``TINY`` then ``opts``."""
    from crbp_panoptic.engine import setup_cfg

    return setup_cfg(CONFIGS / config_file, [str(v) for v in TINY] + list(opts))


def tiny_batch(num_images=2, size=(64, 96), num_classes=3, num_stuff=3, empty=(1,), seed=0):
    """Detectron2 training inputs with boxes, masks and semantic labels.

    Images whose index is in ``empty`` have no instances (Detectron2 must cope with them).
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = size
    batch = []
    for i in range(num_images):
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        n = 0 if i in empty else 3
        boxes, masks = [], torch.zeros(n, h, w, dtype=torch.bool)
        for k in range(n):
            x0, y0 = (
                torch.randint(0, w // 2, (1,), generator=g).item(),
                torch.randint(0, h // 2, (1,), generator=g).item(),
            )
            x1, y1 = x0 + w // 3, y0 + h // 3
            boxes.append([x0, y0, x1, y1])
            masks[k, y0:y1, x0:x1] = True
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4))
        inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        inst.gt_masks = BitMasks(masks)
        sem = torch.randint(0, num_stuff, (h, w), generator=g)
        batch.append({"image": image, "instances": inst, "sem_seg": sem, "height": h, "width": w})
    return batch


def register_tiny_datasets(root, prefix):
    """Register three tiny synthetic panoptic datasets of 64x64 images under ``root``:
    ``<prefix>_train`` (4 images), ``<prefix>_one`` (1 training image), ``<prefix>_val`` (3)."""
    from crbp_panoptic.data import register_synthetic_panoptic

    register_synthetic_panoptic(
        f"{prefix}_train", root=root, split="train", num_images=4, image_size=(64, 64), seed=1
    )
    register_synthetic_panoptic(
        f"{prefix}_one", root=root, split="train", num_images=1, image_size=(64, 64), seed=2
    )
    register_synthetic_panoptic(
        f"{prefix}_val", root=root, split="val", num_images=3, image_size=(64, 64), seed=1
    )


def tiny_train_opts(output_dir, train, test):
    """Config overrides: a tiny model, 3 iterations of batch 2 on ``train``, evaluated on ``test``
    (registered dataset names; see :func:`register_tiny_datasets`)."""
    return [
        "OUTPUT_DIR",
        str(output_dir),
        "DATASETS.TRAIN",
        f"('{train}',)",
        "DATASETS.TEST",
        f"('{test}',)",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.MIN_SIZE_TRAIN",
        "(64,)",
        "INPUT.MAX_SIZE_TRAIN",
        "64",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "MODEL.FPN.OUT_CHANNELS",
        "32",
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        "32",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM",
        "32",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "32",
        "MODEL.CRBP.STEPS",
        "3",
        "MODEL.CRBP.NEUMANN_STEPS",
        "3",
        "SEED",
        "7",
    ]


def load_tool(name):
    """Import ``tools/<name>.py`` as a module, to drive its command line end to end in this
    process (``tool.main(argv)``). The logic behind every tool lives in the package and is
    tested there; this is only for what the command line itself promises (messages, exit
    codes, files written)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"crbp_tool_{name}", REPO / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
