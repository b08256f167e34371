#!/usr/bin/env python
"""Score the mask heads of a comparison's runs on the true boxes, at several mask thresholds.

Reads a ``summary.json`` of ``tools/compare_configs.py`` and, for every finished run of the
given seeds at the given test-step multiples, gives each test thing its true box and class
and compares the head's mask with the thing's own (crbp_panoptic/experiments/true_boxes.py):
median IoU, the share above 0.5, the mean share of the thing missed and of the mask lying on
other instances of its class, beside the grouping-free mask on the same things.

    python tools/score_true_boxes.py output/suite_longrange_all/summary.json --seeds 0 \\
        --thresholds 0.3 0.4 0.5
"""

import argparse
import json

from crbp_panoptic.experiments.report import fmt, markdown_table
from crbp_panoptic.experiments.true_boxes import score_summary


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("summary", help="a summary.json of tools/compare_configs.py")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds to score (default: all)")
    p.add_argument("--multiples", nargs="+", type=float, default=[1], help="of T (default 1)")
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.5], help="mask thresholds")
    p.add_argument("--output", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    try:
        with open(args.summary) as f:
            summary = json.load(f)
        rows = score_summary(summary, args.seeds, args.multiples, args.thresholds)
    except (OSError, ValueError, KeyError) as e:
        p.error(f"{args.summary}: {e}")
    head = ["arm", "seed", "test steps", "threshold", "IoU (median)", "above 0.5", "miss", "leak"]
    table = [
        [r["arm"], r["seed"], r["test_steps"] or "-", r["mask_threshold"]]
        + [fmt(r[k], ".3f") for k in ("iou_median", "found", "miss_mean", "leak_mean")]
        for r in rows
    ]
    print("\n".join(markdown_table(head, table)))
    if rows:
        r = rows[0]
        print(
            f"\ngrouping-free mask on the same {r['things']} things: IoU (median) "
            f"{fmt(r['grouping_free_iou_median'], '.3f')}, above 0.5 "
            f"{fmt(r['grouping_free_found'], '.3f')}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
