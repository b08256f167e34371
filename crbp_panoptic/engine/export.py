"""TorchScript export of a (recurrent) Panoptic FPN by tracing, with a fixed number of steps.

Tracing records the operations of one forward pass, so every recurrent module must run a
fixed number of steps: :func:`fixed_test_steps` sets each refiner's ``test_steps`` and
turns off its early stop (``test_tol = 0``) while tracing. The traced function is
Detectron2's raw inference, ``model.inference(inputs, do_postprocess=False)``: input one
(3, H, W) image tensor as the model takes it (``INPUT.FORMAT`` channels, already resized;
normalisation and padding are inside), output the detections (boxes, scores, classes,
28x28 mask probabilities per ROI) and the semantic logits at the padded input size.
Resizing back and combining them into a panoptic map
(``detector_postprocess``, ``sem_seg_postprocess``,
``combine_semantic_and_instance_outputs``) stay in Python, as in Detectron2's own export.
"""

import contextlib
from typing import Dict, Iterator, Optional

import torch
from torch import nn

from crbp_panoptic.crbp import RecurrentRefiner

__all__ = [
    "eager_raw_outputs",
    "fixed_test_steps",
    "import_tracing_adapter",
    "trace_panoptic",
    "traced_outputs",
]


def import_tracing_adapter():
    """``detectron2.export.TracingAdapter``, or a RuntimeError that says how to get it.

    Detectron2 0.6 as released imports its caffe2 exporter unconditionally, and torch >= 2
    has no caffe2, so ``import detectron2.export`` fails there.
    """
    try:
        from detectron2.export import TracingAdapter
    except ImportError as e:
        raise RuntimeError(
            f"cannot import detectron2.export ({e}). Detectron2 0.6 imports caffe2 there, which "
            "torch >= 2.0 lacks: install Detectron2 with tools/install_detectron2.py (it guards "
            "that import as upstream Detectron2 does) or install upstream Detectron2 main"
        ) from e
    return TracingAdapter


@contextlib.contextmanager
def fixed_test_steps(model: nn.Module, steps: Optional[int] = None) -> Iterator[Dict[str, int]]:
    """Make every refiner of ``model`` run exactly ``steps`` steps in eval mode, temporarily.

    Args:
        model: contains :class:`RecurrentRefiner` modules (none is fine: nothing changes).
        steps: steps to run (None: each refiner's own test steps, early stop off).

    Yields:
        dict: refiner name -> the steps it runs.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps={steps!r}; must be an int >= 1")
    saved, used = [], {}
    for name, m in model.named_modules():
        if isinstance(m, RecurrentRefiner):
            saved.append((m, m.test_steps, m.test_tol))
            m.test_steps = steps or m.test_steps or m.steps
            m.test_tol = 0.0
            used[name] = m.test_steps
    try:
        yield used
    finally:
        for m, test_steps, test_tol in saved:
            m.test_steps, m.test_tol = test_steps, test_tol


def _raw_inference(model, inputs):
    instances, sem_seg = model.inference(inputs, do_postprocess=False)
    return [{"instances": instances[0], "sem_seg": sem_seg[0]}]


def trace_panoptic(model: nn.Module, image: torch.Tensor, steps: Optional[int] = None):
    """Trace ``model``'s raw inference on ``image``.

    Args:
        model: a Panoptic FPN (``inference(inputs, do_postprocess=False)``), in eval mode.
        image: (3, H, W) tensor, as the model's ``"image"`` input.
        steps: recurrent steps frozen into the trace (None: the trained test steps).

    Returns:
        (torch.jit.ScriptModule, TracingAdapter): the traced module, which takes the image
        tensor and returns a flat tuple of tensors, and the adapter whose
        ``outputs_schema`` rebuilds ``[{"instances": Instances, "sem_seg": Tensor}]``.
    """
    if model.training:
        raise ValueError("trace a model in eval mode (model.eval())")
    tracing_adapter = import_tracing_adapter()
    with fixed_test_steps(model, steps), torch.no_grad():
        adapter = tracing_adapter(model, [{"image": image}], _raw_inference)
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    return traced, adapter


@torch.no_grad()
def eager_raw_outputs(model: nn.Module, image: torch.Tensor, steps: Optional[int] = None) -> dict:
    """What the traced module computes, run eagerly: ``{"instances", "sem_seg"}``."""
    with fixed_test_steps(model, steps):
        return _raw_inference(model, [{"image": image}])[0]


def traced_outputs(traced, adapter, image: torch.Tensor) -> dict:
    """Run a traced module on ``image`` and rebuild ``{"instances", "sem_seg"}``."""
    with torch.no_grad():
        flat = traced(image)
    return adapter.outputs_schema(flat)[0]
