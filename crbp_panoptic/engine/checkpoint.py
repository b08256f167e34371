"""Trained weights for inference and evaluation, or a clear refusal.

Detectron2's ``DetectionCheckpointer.load`` loads whatever keys fit and only logs the
others, and an empty ``MODEL.WEIGHTS`` gives a randomly initialised model. That is right
for training (from scratch, or from an ImageNet backbone), but a prediction or an
evaluation made that way is meaningless. ``tools/predict.py``, ``tools/export_model.py``,
``tools/visualize_dynamics.py`` and ``tools/train_net.py --eval-only`` therefore load
weights with :func:`load_trained_weights`:

* without ``MODEL.WEIGHTS`` they stop, unless ``--random-weights`` asks for an
  untrained model explicitly (:func:`check_weights_given`);
* every weight of the model must come from the checkpoint, with one exception: the
  recurrent modules' own weights may be absent altogether, as in a stock Detectron2
  Panoptic FPN checkpoint loaded into a recurrent model (the hGRU of a recurrent FPN
  level or of the recurrent mask head, its bottleneck projections and the mask head's
  readout norm). They keep their initialisation, with a warning; the stock mask head's
  ``mask_fcn1..4`` in such a checkpoint, which the recurrent mask head replaces, are
  ignored. Any other missing key, any key the model lacks and any shape mismatch is an
  error that lists them.
"""

import logging
import os
import re
from typing import Dict, Iterable, List, Set, Tuple

from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

from ..crbp import RecurrentRefiner
from ..modeling import CRBPMaskHead, RecurrentLateral

__all__ = [
    "RANDOM_WEIGHTS_FLAG",
    "WeightsError",
    "check_weights_given",
    "drop_modules",
    "load_trained_weights",
    "recurrent_key_groups",
]

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_FLAG = "--random-weights"


class WeightsError(ValueError):
    """Weights that cannot be used for inference; the message names ``MODEL.WEIGHTS``."""


def drop_modules(weights: str, prefixes: Iterable[str], dest: str) -> List[str]:
    """Write the model weights of checkpoint ``weights`` without the keys under ``prefixes``
    to ``dest``, a checkpoint that ``MODEL.WEIGHTS`` loads for training: the modules
    dropped keep their initialisation there (Detectron2 logs them as missing).

    Args:
        weights: a Detectron2 ``.pth`` checkpoint (``{"model": state_dict, ...}``).
        prefixes: state-dict key prefixes, e.g. ``["roi_heads.mask_head."]``.
        dest: the file written (atomically; only the ``model`` entry is kept).

    Returns:
        list[str]: the keys dropped, sorted.

    Raises:
        ValueError: no key is under any prefix (a misspelt prefix would drop nothing).
    """
    import torch

    prefixes = tuple(prefixes)
    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    state = checkpoint.get("model", checkpoint)
    dropped = sorted(k for k in state if k.startswith(prefixes))
    if not prefixes or not dropped:
        raise ValueError(
            f"{weights}: no key is under {list(prefixes)}; allowed: prefixes of its keys, "
            f"such as {sorted({k.split('.')[0] + '.' for k in state})}"
        )
    tmp = f"{dest}.tmp{os.getpid()}"
    torch.save({"model": {k: v for k, v in state.items() if k not in dropped}}, tmp)
    os.replace(tmp, dest)
    return dropped


def check_weights_given(weights: str, random_weights: bool = False) -> str:
    """The checkpoint to load, checked before any model is built.

    Args:
        weights: ``MODEL.WEIGHTS``: a local file, or a URL Detectron2's ``PathManager``
            resolves (``detectron2://``, ``https://``).
        random_weights: the user asked for an untrained model (``--random-weights``).

    Returns:
        str: ``weights``, or "" when ``random_weights`` (nothing is loaded then).

    Raises:
        WeightsError: no weights and no ``random_weights``, or a local file that does not
            exist.
    """
    if random_weights:
        if weights:
            logger.warning("%s: MODEL.WEIGHTS %r is not loaded", RANDOM_WEIGHTS_FLAG, weights)
        return ""
    if not weights:
        raise WeightsError(
            "MODEL.WEIGHTS is empty, so the model would run with random weights: add "
            "'MODEL.WEIGHTS path/to/model_final.pth' after the other arguments, or pass "
            f"{RANDOM_WEIGHTS_FLAG} to run an untrained model on purpose"
        )
    if "://" not in weights and not os.path.isfile(weights):
        what = "is a directory" if os.path.isdir(weights) else "no such file"
        raise WeightsError(f"MODEL.WEIGHTS {weights!r}: {what}")
    return weights


def _under(key: str, prefix: str) -> bool:
    return key.startswith(prefix + ".")


def recurrent_key_groups(model: nn.Module) -> Dict[str, Set[str]]:
    """The state-dict keys that the recurrent parts add to a stock Panoptic FPN.

    Returns:
        dict: module name -> its own keys: for a :class:`RecurrentLateral`, all but the
        stock lateral conv's (``weight``, ``bias``, ``norm.*``); for a
        :class:`CRBPMaskHead`, ``mask_recurrent.*`` and ``mask_recurrent_norm.*``; for any
        other :class:`RecurrentRefiner`, all of its keys.
    """
    keys = list(model.state_dict())
    groups: Dict[str, Set[str]] = {}
    for name, module in model.named_modules():
        if any(_under(name, g) for g in groups):
            continue  # the refiner inside a lateral or a mask head: grouped with it
        if isinstance(module, RecurrentLateral):
            stock = {f"{name}.weight", f"{name}.bias"}
            own = {
                k
                for k in keys
                if _under(k, name) and k not in stock and not _under(k, f"{name}.norm")
            }
        elif isinstance(module, CRBPMaskHead):
            own = {
                k
                for k in keys
                if _under(k, f"{name}.mask_recurrent") or _under(k, f"{name}.mask_recurrent_norm")
            }
        elif isinstance(module, RecurrentRefiner):
            own = {k for k in keys if _under(k, name)}
        else:
            continue
        if own:
            groups[name] = own
    return groups


def _replaced_keys(model: nn.Module, keys: Iterable[str]) -> Set[str]:
    """Keys of a stock checkpoint's ``mask_fcn*`` convs that a recurrent mask head replaces."""
    heads = [n for n, m in model.named_modules() if isinstance(m, CRBPMaskHead)]
    pattern = re.compile(r"mask_fcn\d+\.")
    return {k for k in keys for h in heads if _under(k, h) and pattern.match(k[len(h) + 1 :])}


def _grouped(keys: Iterable[str], limit: int = 40) -> List[str]:
    """Keys as ``module.{a, b}`` lines, one per module, at most ``limit`` lines."""
    by_module: Dict[str, List[str]] = {}
    for key in sorted(keys):
        module, _, leaf = key.rpartition(".")
        by_module.setdefault(module, []).append(leaf)
    lines = [
        f"{module}.{leaves[0]}" if len(leaves) == 1 else f"{module}.{{{', '.join(leaves)}}}"
        for module, leaves in by_module.items()
    ]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more modules"]
    return lines


class _StrictCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` (model-zoo conversions included) that refuses a checkpoint
    whose keys do not fit the model, beyond the recurrent parts of a stock checkpoint and the
    modules under ``fresh`` (which the caller trains from their initialisation)."""

    def __init__(self, model: nn.Module, weights: str, source: str, fresh: Tuple[str, ...] = ()):
        super().__init__(model)
        self.weights = weights
        self.name = f"{source} {weights!r}"
        self.fresh = tuple(fresh)

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise WeightsError(
                f"{self.name} cannot be read as a checkpoint: {type(e).__name__}: {e}"
            ) from e

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        wrong_shapes = list(incompatible.incorrect_shapes)
        reshaped = {k for k, _, _ in wrong_shapes}
        missing = set(incompatible.missing_keys) - reshaped
        unexpected = set(incompatible.unexpected_keys)
        if self.fresh:
            missing = {k for k in missing if not k.startswith(self.fresh)}
            unexpected = {k for k in unexpected if not k.startswith(self.fresh)}
            wrong_shapes = [w for w in wrong_shapes if not w[0].startswith(self.fresh)]

        absent_groups = []
        for name, own in recurrent_key_groups(self.model).items():
            # A BatchNorm's step counter is never reported missing (it is not a weight).
            weights = {k for k in own if not k.endswith("num_batches_tracked")}
            if weights <= missing:  # the checkpoint has nothing of this module: a stock one
                missing -= own
                absent_groups.append(name)
        replaced = _replaced_keys(self.model, unexpected) if absent_groups else set()
        unexpected -= replaced

        if missing or unexpected or wrong_shapes:
            parts = [f"{self.name} does not fit the model:"]
            for title, lines in (
                ("missing from the checkpoint", _grouped(missing)),
                ("in the checkpoint but not in the model", _grouped(unexpected)),
                (
                    "different shapes (checkpoint -> model)",
                    [f"{k}: {tuple(a)} -> {tuple(b)}" for k, a, b in sorted(wrong_shapes)],
                ),
            ):
                if lines:
                    parts += [f"  {title}:"] + [f"    {line}" for line in lines]
            parts.append(
                "Only the recurrent modules' own weights may be missing (a stock Detectron2 "
                "checkpoint). Use the config the checkpoint was trained with."
            )
            raise WeightsError("\n".join(parts))
        if absent_groups:
            logger.warning(
                "%s has no weights for the recurrent modules %s: they keep their initialisation%s",
                self.name,
                absent_groups,
                "; the stock mask head's mask_fcn* convs in it are not used" if replaced else "",
            )
        # Everything left was accepted above: nothing more for fvcore to log.
        return incompatible._replace(missing_keys=[], unexpected_keys=[], incorrect_shapes=[])


def load_trained_weights(
    model: nn.Module,
    weights: str,
    source: str = "MODEL.WEIGHTS",
    fresh: Iterable[str] = (),
) -> None:
    """Load ``weights`` into ``model``, refusing a checkpoint that does not fit it.

    Args:
        model: a built (recurrent) Panoptic FPN.
        weights: a checkpoint accepted by :func:`check_weights_given`; "" loads nothing
            (the user asked for random weights).
        source: where ``weights`` came from, for messages.
        fresh: state-dict key prefixes whose keys may be missing, extra or of another shape
            (e.g. ``["roi_heads.mask_head."]``: a mask head of another kind or depth, which
            the caller trains from its initialisation).

    Raises:
        WeightsError: the file cannot be read as a checkpoint, or its keys do not fit the
            model (the message lists the missing, unexpected and reshaped keys).
    """
    if not weights:
        logger.warning("%s: the model runs with untrained weights", RANDOM_WEIGHTS_FLAG)
        return
    checkpointer = _StrictCheckpointer(model, weights, source, tuple(fresh))
    try:
        checkpointer.load(weights, checkpointables=[])
    except (AssertionError, OSError) as e:  # a URL that cannot be fetched, a vanished file
        raise WeightsError(f"{checkpointer.name} cannot be loaded: {e}") from e
