"""Experiment helpers behind the tools in ``tools/`` (benchmarks, stability, demo).

The tools are thin command lines; what they measure and how lives here, importable and
tested:

* :mod:`.measure` -- one training step's time and memory (:func:`~.measure.measure_step`),
  parameter counts (:func:`~.measure.parameter_counts`) and multiply-adds.
* :mod:`.machine` -- what a figure was measured on.
* :mod:`.batches` -- random Detectron2 training batches of any size.
* :mod:`.trajectories` -- residual and drift curves of the recurrent modules of a model.
* :mod:`.evaluation` -- PQ of a trained model at a chosen number of test steps, and the
  metrics a trainer logged.
* :mod:`.report` -- number formatting, markdown tables, writing a report.
* :mod:`.benchmark` -- training memory and speed of each arm against the feedforward model.
* :mod:`.engine_benchmark` -- one training step of the hGRU refiner alone, per arm, and
  against torchdeq.
* :mod:`.speed` -- what each speed lever buys on trained runs.
* :mod:`.coco_eval_benchmark` -- the COCOeval backends timed on synthetic detections.
* :mod:`.stability` -- PQ and residual when a model runs past its trained steps.
* :mod:`.demo` -- train on the synthetic data, report PQ, draw overlays.
* :mod:`.seeds` -- train configs over seeds, PQ at multiples of the trained steps, the
  mask head alone on ground-truth boxes (``tools/compare_configs.py --configs``).
* :mod:`.suites` -- declared comparisons: feedforward, BPTT-1, BPTT-3 and C-RBP from one
  shared warm start, over seeds (``tools/compare_configs.py --suite``).

Submodules import Detectron2 where they need it; import them, not this package, for names.
"""
