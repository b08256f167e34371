"""COCOeval backends timed on synthetic detections (box and mask AP, same statistics).

:func:`perturbed_detections` turns COCO ground truth into plausible detections -- every
object found with a jittered box and a shifted mask, some missed, some duplicated, some
false positives -- so AP is neither 0 nor 1 and every branch of COCOeval's matching runs.
"""

import time
from typing import Dict, List, Sequence

import numpy as np
import pycocotools.mask as mask_util

from ..evaluation.coco_eval import evaluate_coco, load_ground_truth
from .machine import describe, machine_info

__all__ = ["benchmark_backends", "format_report", "perturbed_detections"]


def rle_to_mask(rle: dict) -> np.ndarray:
    """An (H, W) bool mask from a COCO RLE (uncompressed, as the synthetic data writes it)."""
    return mask_util.decode(mask_util.frPyObjects(rle, *rle["size"])).astype(bool)


def _encode(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # JSON-able, as Detectron2 writes it
    return rle


def _detection(image_id, category_id, mask, score, rng, max_shift):
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    mask = np.roll(mask, (dy, dx), axis=(0, 1))
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]
    box = [v + float(rng.normal(0, 1.0)) for v in box[:2]] + [
        max(1.0, v + float(rng.normal(0, 1.5))) for v in box[2:]
    ]
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "score": float(score),
        "bbox": box,
        "segmentation": _encode(mask),
    }


def perturbed_detections(
    coco_json: dict,
    seed: int = 0,
    miss: float = 0.1,
    duplicate: float = 0.1,
    false_positive: float = 0.2,
    max_shift: int = 3,
) -> List[dict]:
    """COCO results derived from ground truth, deterministically.

    Args:
        coco_json: a COCO instances dataset (``images``, ``annotations`` with uncompressed
            RLE ``segmentation`` as the synthetic data has, ``categories``).
        seed: seed of the perturbations.
        miss: probability that an object is not detected.
        duplicate: probability of a second, lower-scored detection of an object.
        false_positive: expected false positives per image (Poisson): the mask of a
            random object of the same image size, any class.
        max_shift: masks move by up to this many pixels in each direction.

    Returns:
        list[dict]: ``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h] and
        ``segmentation`` (compressed RLE, counts as str).
    """
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in coco_json["categories"]]
    annotations = coco_json["annotations"]
    out = []
    for ann in annotations:
        mask = rle_to_mask(ann["segmentation"])
        if rng.random() >= miss:
            out.append(
                _detection(
                    ann["image_id"], ann["category_id"], mask, rng.uniform(0.3, 1.0), rng, max_shift
                )
            )
        if rng.random() < duplicate:
            out.append(
                _detection(
                    ann["image_id"],
                    ann["category_id"],
                    mask,
                    rng.uniform(0.05, 0.5),
                    rng,
                    2 * max_shift,
                )
            )
    for image in coco_json["images"]:
        for _ in range(rng.poisson(false_positive) if annotations else 0):
            source = annotations[int(rng.integers(len(annotations)))]
            if source["segmentation"]["size"] != [image["height"], image["width"]]:
                continue
            out.append(
                _detection(
                    image["id"],
                    rng.choice(categories),
                    rle_to_mask(source["segmentation"]),
                    rng.uniform(0.05, 0.9),
                    rng,
                    max_shift,
                )
            )
    return [d for d in out if d is not None]


def benchmark_backends(
    coco_json: dict,
    results: Sequence[dict],
    backends: Sequence[str],
    iou_types=("bbox", "segm"),
    repeats: int = 3,
) -> Dict[str, dict]:
    """Time :func:`evaluate_coco` per backend and IoU type (best of ``repeats``).

    The ground truth is loaded once per backend, outside the timing (an evaluator does it
    once, at construction); ``loadRes``, evaluate, accumulate and summarize are timed.

    Returns:
        dict: backend -> {"seconds": {iou_type: s}, "phases": {iou_type: {"loadRes": s,
        "evaluate": s, "accumulate": s}} (of the fastest run), "stats": {iou_type: [12
        floats]}}.
    """
    report = {}
    for backend in backends:
        gt = load_ground_truth(coco_json, backend)
        seconds, phases, stats = {}, {}, {}
        for iou_type in iou_types:
            seconds[iou_type] = float("inf")
            for _ in range(repeats):
                timings = {}
                start = time.perf_counter()
                coco_eval = evaluate_coco(gt, results, iou_type, backend, timings=timings)
                elapsed = time.perf_counter() - start
                if elapsed < seconds[iou_type]:
                    seconds[iou_type], phases[iou_type] = elapsed, timings
            stats[iou_type] = [float(v) for v in coco_eval.stats]
        report[backend] = {"seconds": seconds, "phases": phases, "stats": stats}
    return report


def format_report(report: Dict[str, dict], command: str, dataset: str, num_results: int) -> str:
    """A Markdown report of :func:`benchmark_backends`: times, speed-ups, the 12 stats."""
    from importlib.metadata import version

    machine = machine_info("cpu")
    backends = list(report)
    base = report[backends[0]]["seconds"]
    lines = [
        "# COCOeval implementations: time and agreement",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {dataset}; {num_results} detections derived from the ground truth "
        "(`crbp_panoptic.experiments.coco_eval_benchmark.perturbed_detections`).",
        f"Machine: {describe(machine)}, Python {machine['python']}, pycocotools "
        f"{version('pycocotools')}, faster-coco-eval {version('faster-coco-eval')}.",
        "Time: loadRes + evaluate + accumulate + summarize, best of the repeats "
        "(ground truth loaded once, untimed, as an evaluator does).",
        "",
        "| backend | " + " | ".join(f"{t} s | {t} speed-up" for t in base) + " |",
        "|---|" + "---:|---:|" * len(base),
    ]
    for backend in backends:
        sec = report[backend]["seconds"]
        lines.append(
            f"| {backend} | "
            + " | ".join(f"{sec[t]:.3f} | {base[t] / sec[t]:.1f}x" for t in base)
            + " |"
        )
    lines += ["", "Where the time goes (seconds, fastest run):", ""]
    lines += [
        "| backend | IoU | loadRes | evaluate | accumulate + summarize |",
        "|---|---|---:|---:|---:|",
    ]
    for backend in backends:
        for t, ph in report[backend]["phases"].items():
            lines.append(
                f"| {backend} | {t} | {ph['loadRes']:.3f} | {ph['evaluate']:.3f} "
                f"| {ph['accumulate']:.3f} |"
            )
    lines += [
        "",
        "The 12 summary statistics (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, "
        "ARs, ARm, ARl):",
        "",
    ]
    for backend in backends:
        for t, stats in report[backend]["stats"].items():
            lines.append(f"- {backend} {t}: " + ", ".join(f"{v:.4f}" for v in stats))
    same = all(
        np.allclose(report[b]["stats"][t], report[backends[0]]["stats"][t], rtol=0, atol=1e-12)
        for b in backends
        for t in base
    )
    lines += [
        "",
        f"Identical to {backends[0]} (|difference| <= 1e-12) for every backend: {same}.",
        "",
    ]
    return "\n".join(lines)
