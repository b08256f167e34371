"""The mask-head learning-rate factor (``MODEL.CRBP.MASK_HEAD_LR_FACTOR``), against
Detectron2's own ``build_optimizer``."""

import copy

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.utils.events import EventStorage

from crbp_panoptic.engine import Trainer
from crbp_panoptic.engine.optimizer import build_optimizer

from tests.tiny import tiny_batch, tiny_cfg

CRBP_MASK = "Synthetic-PanopticSegmentation/panoptic_crbp_mask_R_18_quick.yaml"
STOCK = "Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml"


def _hyper(optimizer):
    """Parameter id -> (lr, weight_decay) of its group."""
    return {
        id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]
    }


@pytest.mark.parametrize("config", [CRBP_MASK, STOCK])
def test_factor_scales_the_mask_heads_learning_rate_and_nothing_else(config):
    cfg = tiny_cfg(config, "SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    model = build_model(cfg)
    reference = _hyper(d2_build_optimizer(cfg, model))
    cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR = 5.0
    got = _hyper(build_optimizer(cfg, model))
    head = {id(p) for p in model.roi_heads.mask_head.parameters()}
    assert head and set(got) == set(reference) == {id(p) for p in model.parameters()}
    for pid, (lr, wd) in reference.items():
        assert got[pid] == ((lr * 5.0 if pid in head else lr), wd)
    # the groups Detectron2 made (bias and norm overrides) are still there, inside the head too
    assert len({lr for pid, (lr, _) in got.items() if pid in head}) == 2


def test_factor_one_is_detectron2s_optimizer():
    cfg = tiny_cfg(CRBP_MASK)
    model = build_model(cfg)
    ours, theirs = Trainer.build_optimizer(cfg, model), d2_build_optimizer(cfg, model)
    assert _hyper(ours) == _hyper(theirs)
    assert type(ours).__name__ == type(theirs).__name__ == "SGDWithGradientClip"
    assert ours.defaults == theirs.defaults


def _step(cfg, model, batch):
    model = copy.deepcopy(model)
    optimizer = Trainer.build_optimizer(cfg, model)
    torch.manual_seed(0)
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def test_one_sgd_step_moves_the_mask_head_factor_times_as_far():
    # a large rate, so that each update is far above float32 rounding of the weights
    plain = ["SOLVER.BASE_LR", "0.5", "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0"]
    plain += ["SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.CLIP_GRADIENTS.ENABLED", "False"]
    cfg = tiny_cfg(CRBP_MASK, *plain)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    batch = tiny_batch()
    base = _step(cfg, model, batch)
    cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR = 3.0
    scaled = _step(cfg, model, batch)
    moved = [n for n, d in base.items() if d.abs().max() > 1e-3]
    assert any(n.startswith("roi_heads.mask_head.") for n in moved)
    assert any(n.startswith("backbone.") for n in moved)
    for name in moved:
        factor = 3.0 if name.startswith("roi_heads.mask_head.") else 1.0
        torch.testing.assert_close(scaled[name], factor * base[name], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_factor_names_the_key(value):
    cfg = tiny_cfg(CRBP_MASK)
    cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR = value
    with pytest.raises(ValueError, match=r"MODEL\.CRBP\.MASK_HEAD_LR_FACTOR=.*number > 0"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))


def test_factor_without_a_mask_head_names_the_key():
    cfg = tiny_cfg(CRBP_MASK)
    cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR = 2.0
    with pytest.raises(ValueError, match=r"MASK_HEAD_LR_FACTOR=2.0 needs .* Linear has none"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
    cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR = 1.0
    assert build_optimizer(cfg, torch.nn.Linear(2, 2)).param_groups[0]["lr"] == cfg.SOLVER.BASE_LR
