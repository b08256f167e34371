"""Experiment helpers behind the tools in ``tools/`` (benchmarks, comparisons over seeds).

The tools are thin command lines; what they measure and how lives here, importable and
tested:

* :mod:`.measure` -- one training step's time and memory (:func:`~.measure.measure_step`),
  parameter counts (:func:`~.measure.parameter_counts`) and multiply-adds.
* :mod:`.machine` -- what a figure was measured on.
* :mod:`.batches` -- random Detectron2 training batches of any size.
* :mod:`.evaluation` -- PQ of a trained model in this process, and the residual and drift
  curves of its recurrent modules.
* :mod:`.report` -- number formatting, markdown tables, writing a report.
* :mod:`.benchmark` -- training memory and speed of each arm against the feedforward model.
* :mod:`.engine_benchmark` -- one training step of the hGRU refiner alone, per arm.
* :mod:`.speed` -- what each speed lever buys on trained runs.
* :mod:`.runner` -- train arms over seeds and evaluate each at and past its trained steps
  (``tools/compare_configs.py``); :mod:`.suites` -- its declared comparisons;
  :mod:`.runner_report` -- its tables and figure.

Submodules import Detectron2 where they need it; import them, not this package, for names.
"""
