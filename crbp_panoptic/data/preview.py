"""A picture of a generated split: its first images above their panoptic labels."""

import os

import numpy as np
from PIL import Image

from .coco_format import load_json, read_png, rgb2id
from .splits import split_paths

__all__ = ["write_preview"]


def write_preview(split_dir: str, path: str, num_images: int = 8, columns: int = 4) -> str:
    """Write a PNG that shows the first images of a split above their panoptic labels.

    Each image is drawn over its segments: stuff in its category's colour, every thing
    instance in a colour of its own (the same for all its pieces), unlabeled pixels black.

    Args:
        split_dir (str): a generated split.
        path (str): the PNG to write (its directory must exist).
        num_images (int): how many images to show (>= 1; fewer if the split is smaller).
        columns (int): images per row.

    Returns:
        str: ``path``.
    """
    if int(num_images) < 1 or int(columns) < 1:
        raise ValueError(f"num_images={num_images!r}, columns={columns!r}: need at least 1 each")
    p = split_paths(split_dir)
    data = load_json(p.panoptic_json)
    colour = {c["id"]: c["color"] for c in data["categories"]}
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    palette = np.array(
        [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
        + [(145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)],
        dtype=np.uint8,
    )
    panels = []
    for ann in data["annotations"][: int(num_images)]:
        with Image.open(os.path.join(p.image_dir, files[ann["image_id"]])) as im:
            image = np.asarray(im.convert("RGB"))
        pan = rgb2id(read_png(os.path.join(p.panoptic_dir, ann["file_name"]), "panoptic PNG"))
        labels = np.zeros_like(image)
        things = [s["id"] for s in ann["segments_info"] if isthing[s["category_id"]]]
        for seg in ann["segments_info"]:
            if isthing[seg["category_id"]]:
                labels[pan == seg["id"]] = palette[things.index(seg["id"]) % len(palette)]
            else:
                labels[pan == seg["id"]] = colour[seg["category_id"]]
        panels.append(np.concatenate([image, labels], axis=0))
    h, w = panels[0].shape[:2]
    cols = min(int(columns), len(panels))
    rows = -(-len(panels) // cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        grid[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = panel
    Image.fromarray(grid).save(path)
    return path
