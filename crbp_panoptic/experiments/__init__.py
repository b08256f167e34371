"""What the tools in ``tools/`` measure, and how: importable and tested.

:mod:`.measure` (step time and memory, parameters, multiply-adds), :mod:`.machine`,
:mod:`.batches` (random training batches), :mod:`.evaluation` (PQ, residual curves),
:mod:`.report`; the benchmarks :mod:`.benchmark`, :mod:`.engine_benchmark`, :mod:`.speed`;
comparisons over seeds: :mod:`.runner`, :mod:`.suites`, :mod:`.runner_report`.
Submodules import Detectron2 where they need it; import them, not this package, for names.
"""
