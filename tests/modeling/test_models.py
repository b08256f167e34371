"""The Detectron2 wiring: configs, backbone, mask head, penalty in the loss dict, errors."""

import math

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import crbp_panoptic  # noqa: F401  (registers)
from crbp_panoptic.crbp import NEUMANN_STOPS
from crbp_panoptic.modeling import CRBPFPN, CRBPMaskHead, placement, recurrent_modules

from tests.tiny import CONFIGS, tiny_batch, tiny_cfg

FPN_YAML = "COCO-PanopticSegmentation/panoptic_crbp_fpn_R_50_1x.yaml"
MASK_YAML = "COCO-PanopticSegmentation/panoptic_crbp_mask_R_50_1x.yaml"
STOCK_YAML = "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
ALL_YAMLS = sorted(
    p.relative_to(CONFIGS).as_posix()
    for p in CONFIGS.rglob("*.yaml")
    if not p.name.startswith("Base-")
)
GRADS = ["crbp", "rbp", "bptt", "cbptt"]


def _build(config_file, *opts, seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(config_file, *opts))


def _train_step(model, batch):
    model.train()
    with EventStorage():
        losses = model(batch)
        total = sum(losses.values())
        model.zero_grad()
        total.backward()
    return losses


@pytest.mark.parametrize("config_file", ALL_YAMLS)
def test_every_yaml_builds_and_runs_inference(config_file):
    model = _build(config_file)
    model.eval()
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 80}])
    assert out["sem_seg"].shape[-2:] == (64, 80)
    seg, segments = out["panoptic_seg"]
    assert seg.shape == (64, 80)
    assert isinstance(segments, list)


@pytest.mark.parametrize(
    "config_file, expected",
    [(STOCK_YAML, "feedforward"), (FPN_YAML, "fpn"), (MASK_YAML, "mask_head")],
)
def test_placement_names_where_the_recurrence_sits(config_file, expected):
    cfg = tiny_cfg(config_file)
    assert placement(cfg) == expected
    assert bool(recurrent_modules(build_model(cfg))) == (expected != "feedforward")
    both = tiny_cfg(FPN_YAML, "MODEL.ROI_MASK_HEAD.NAME", "CRBPMaskHead")
    assert placement(both) == "fpn+mask_head"


def test_config_paths_named_by_the_contract_exist():
    for name in (FPN_YAML, MASK_YAML):
        assert (CONFIGS / name).is_file(), name


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (160, 96)])
def test_backbone_output_shape_matches_outputs(size):
    model = _build(FPN_YAML)
    backbone = model.backbone
    assert isinstance(backbone, CRBPFPN)
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, *size))
    shapes = backbone.output_shape()
    assert list(feats) == list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    for name, f in feats.items():
        assert f.shape[1] == shapes[name].channels
        # p6 is a stride-2 max-pool of p5, which rounds up.
        assert f.shape[-2] == math.ceil(size[0] / shapes[name].stride)
        assert f.shape[-1] == math.ceil(size[1] / shapes[name].stride)


def test_backbone_matches_stock_fpn_shapes():
    ours = _build(FPN_YAML).backbone.output_shape()
    stock = _build(STOCK_YAML).backbone.output_shape()
    assert ours == stock


def test_fpn_levels_select_the_recurrent_laterals():
    model = _build(FPN_YAML, "MODEL.CRBP.FPN_LEVELS", "['p4', 'p5']")
    names = sorted(n for n, _ in recurrent_modules(model))
    assert names == ["backbone.fpn_lateral4.recurrent", "backbone.fpn_lateral5.recurrent"]


def test_recurrent_fpn_runs_detectron2s_own_forward():
    """CRBPFPN adds no forward of its own: Detectron2's FPN.forward runs the refiners
    through the replaced lateral convs, which share the stock lateral parameters."""
    from detectron2.modeling.backbone import FPN

    from crbp_panoptic.modeling import CRBPFPN, RecurrentLateral

    assert CRBPFPN.forward is FPN.forward
    backbone = _build(FPN_YAML, "MODEL.CRBP.FPN_LEVELS", "['p3']").backbone
    lateral = backbone.fpn_lateral3
    assert isinstance(lateral, RecurrentLateral) and lateral in backbone.lateral_convs
    assert not isinstance(backbone.fpn_lateral2, RecurrentLateral)
    calls = []
    lateral.recurrent.register_forward_hook(lambda *args: calls.append(args[2].shape))
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert calls == [(1, lateral.recurrent.cell.channels, 8, 8)]
    assert out["p3"].shape[-2:] == (8, 8)


def test_fpn_bottleneck_projects_into_and_out_of_a_narrower_hgru():
    model = _build(FPN_YAML, "MODEL.CRBP.FPN_CHANNELS", 16, "MODEL.CRBP.NUM_GROUPS", 4)
    for name, refiner in recurrent_modules(model):
        assert refiner.cell.channels == 16, name
    lateral = model.backbone.fpn_lateral4
    assert lateral.recurrent_in.weight.shape[:2] == (16, 32)
    assert lateral.recurrent_out.weight.shape[:2] == (32, 16)
    model.eval()
    with torch.no_grad():
        out = model.backbone(torch.randn(1, 3, 64, 64))
    assert out["p4"].shape == (1, 32, 4, 4)
    plain = _build(FPN_YAML, "MODEL.CRBP.FPN_CHANNELS", 0).backbone.fpn_lateral4
    assert plain.recurrent_in is None and plain.recurrent.cell.channels == 32
    with pytest.raises(ValueError, match="MODEL.CRBP.FPN_CHANNELS=-1"):
        _build(FPN_YAML, "MODEL.CRBP.FPN_CHANNELS", -1)


@pytest.mark.parametrize("config_file,replaced", [(FPN_YAML, ()), (MASK_YAML, ("mask_fcn",))])
def test_stock_checkpoint_loads_into_every_part_that_is_not_new(config_file, replaced):
    stock = _build(STOCK_YAML).state_dict()
    model = _build(config_file)
    result = model.load_state_dict(stock, strict=False)  # raises on any shape mismatch
    new = [k for k in result.missing_keys if "recurrent" not in k]
    assert new == [], f"stock parts without a stock weight: {new}"
    assert all(any(r in k for r in replaced) for k in result.unexpected_keys), (
        result.unexpected_keys
    )
    if replaced:  # the four 3x3 convs of the stock head are exactly what was replaced
        assert {k.split(".")[2] for k in result.unexpected_keys} == {
            f"mask_fcn{i}" for i in range(1, 5)
        }
    for key, value in stock.items():
        if key in model.state_dict():
            assert torch.equal(model.state_dict()[key], value)


def _trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "config_file,stock_file,total,stock_total",
    [
        (MASK_YAML, STOCK_YAML, 44_968_038, 45_751_590),
        (
            "COCO-PanopticSegmentation/panoptic_crbp_mask_R_101_3x.yaml",
            "COCO-PanopticSegmentation/panoptic_fpn_R_101_3x.yaml",
            63_907_942,
            64_691_494,
        ),
    ],
)
def test_paper_mask_model_has_the_papers_parameter_count(
    config_file, stock_file, total, stock_total
):
    """The full-size COCO models, as their YAMLs build them: the paper reports 44,968,038
    trainable parameters for its R-50 C-RBP model against 45,751,590 for Panoptic FPN
    (783,552 fewer: a 1,859,728-parameter head in place of the stock 2,643,280)."""
    from crbp_panoptic.engine import setup_cfg

    ours = build_model(setup_cfg(CONFIGS / config_file, ["MODEL.DEVICE", "cpu"]))
    stock = build_model(setup_cfg(CONFIGS / stock_file, ["MODEL.DEVICE", "cpu"]))
    assert isinstance(ours.roi_heads.mask_head, CRBPMaskHead)
    assert _trainable(ours.roi_heads.mask_head) == 1_859_728
    assert _trainable(stock.roi_heads.mask_head) == 2_643_280
    assert (_trainable(ours), _trainable(stock)) == (total, stock_total)
    assert stock_total - total == 783_552


def test_paper_mask_config_builds_the_authors_model():
    model = _build(MASK_YAML)
    head = model.roi_heads.mask_head
    refiner, cell = head.mask_recurrent, head.mask_recurrent.cell
    assert (cell.variant, cell.gala, cell.gate_bias_init, cell.norm) == (
        "less_softplus",
        True,
        "raw",
        "GN",
    )
    assert isinstance(head.mask_recurrent_norm, torch.nn.SyncBatchNorm)
    assert (refiner.mode, refiner.lcp_tau, refiner.lcp_reduction) == ("crbp", 0.95, "sum")
    assert refiner.test_tol == 0.0 and model.lcp_weight == 0.001
    # raw gate biases: b1 ~ U(1, T - 1) with T = 3 in the tiny config, b2 = -b1
    b1 = cell.att_bias.detach().flatten()
    assert b1.min() >= 1.0 and b1.max() <= 2.0
    torch.testing.assert_close(cell.gate.bias.detach(), -b1)


def test_summed_penalty_reaches_the_loss_weighted_by_lcp_weight():
    """loss_lcp = LCP_WEIGHT x the penalty summed over every element of the mask head's
    state (all foreground ROIs): the authors' XI x sum."""
    model = _build(MASK_YAML, "MODEL.CRBP.LCP_TAU", 0.05)
    losses = _train_step(model, tiny_batch(empty=()))
    (refiner,) = [m for _, m in recurrent_modules(model)]
    state = refiner.last_result.state
    assert losses["loss_lcp"].item() == pytest.approx(0.001 * refiner.last_result.lcp.item())
    mean = _build(MASK_YAML, "MODEL.CRBP.LCP_TAU", 0.05, "MODEL.CRBP.LCP_REDUCTION", "mean")
    _train_step(mean, tiny_batch(empty=()))
    (refiner_mean,) = [m for _, m in recurrent_modules(mean)]
    assert refiner.last_result.lcp.item() == pytest.approx(
        refiner_mean.last_result.lcp.item() * state.numel(), rel=1e-5
    )


@pytest.mark.parametrize("norm", ["GN", "SyncBN", "BN"])
def test_mask_head_readout_sees_a_unit_scale_state(norm):
    head = _build(MASK_YAML, "MODEL.CRBP.MASK_OUTPUT_NORM", norm).roi_heads.mask_head
    seen = {}
    head.deconv.register_forward_pre_hook(lambda m, args: seen.update(readout=args[0]))
    x = torch.randn(6, head.deconv.in_channels, 14, 14)
    head.train()  # batch statistics for BN
    with torch.no_grad():
        state = head.mask_recurrent(x)
        head.layers(x)
    assert state.std() < 0.5  # a small contrast (the cell's norm gains start at 0.1)
    if norm == "GN":
        groups = seen["readout"].reshape(6, head.mask_recurrent_norm.num_groups, -1)
        assert torch.allclose(groups.std(-1), torch.ones(()), atol=0.05)
    else:
        per_channel = seen["readout"].transpose(0, 1).flatten(1).std(-1)
        assert torch.allclose(per_channel, torch.ones(()), atol=0.05)


def test_mask_head_output_norm_none_and_bad_values():
    head = _build(MASK_YAML, "MODEL.CRBP.MASK_OUTPUT_NORM", "").roi_heads.mask_head
    assert isinstance(head.mask_recurrent_norm, torch.nn.Identity)
    with pytest.raises(ValueError, match=r"MODEL.CRBP.MASK_OUTPUT_NORM='LN'; choose from"):
        _build(MASK_YAML, "MODEL.CRBP.MASK_OUTPUT_NORM", "LN")
    with pytest.raises(ValueError, match=r"MODEL.CRBP.NUM_GROUPS=5; must divide .* 32"):
        _build(MASK_YAML, "MODEL.CRBP.MASK_OUTPUT_NORM", "GN", "MODEL.CRBP.NUM_GROUPS", 5)


@pytest.mark.parametrize("grad", GRADS)
@pytest.mark.parametrize("config_file", [FPN_YAML, MASK_YAML])
def test_training_step_finite_losses_and_recurrent_gradients(config_file, grad):
    model = _build(config_file, "MODEL.CRBP.GRAD", grad)
    losses = _train_step(model, tiny_batch())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert ("loss_lcp" in losses) == (grad in ("crbp", "cbptt"))
    for name, module in recurrent_modules(model):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("config_file", [FPN_YAML, MASK_YAML])
def test_penalty_reaches_loss_and_changes_recurrent_gradients(config_file):
    batch = tiny_batch()

    def recurrent_grads(weight):
        model = _build(config_file, "MODEL.CRBP.LCP_WEIGHT", weight, "MODEL.CRBP.LCP_TAU", 0.05)
        losses = _train_step(model, batch)
        grads = torch.cat(
            [p.grad.flatten() for _, m in recurrent_modules(model) for p in m.parameters()]
        )
        return losses, grads

    losses0, g0 = recurrent_grads(0.0)
    losses1, g1 = recurrent_grads(10.0)
    assert losses1["loss_lcp"] > 0
    assert losses0["loss_lcp"] == 0
    assert not torch.allclose(g0, g1), "the penalty did not change the recurrent gradients"


DYNAMICS = (
    "contrast",
    "contrast_rel",
    "colsum_mean",
    "colsum_p50",
    "colsum_p90",
    "colsum_max",
    "frac_above_tau",
)


def test_diagnostics_reach_event_storage():
    model = _build(MASK_YAML, "MODEL.CRBP.DIAGNOSTICS_PERIOD", 2)
    model.train()
    logged = []
    with EventStorage() as storage:
        for _ in range(3):
            model.zero_grad()
            sum(model(tiny_batch(empty=())).values()).backward()
            logged.append({k for k, v in storage.latest().items() if v[1] == storage.iter})
            storage.step()
        keys = set(storage.histories())
    prefix = "crbp/roi_heads.mask_head.mask_recurrent/"
    neumann = ("neumann_terms", "neumann_residual", "neumann_cut")
    stops = tuple(f"neumann_stop_{reason}" for reason in NEUMANN_STOPS)
    for stat in ("residual", "steps", "lcp", *neumann, *stops, *DYNAMICS):
        assert prefix + stat in keys, sorted(keys)
    # one reason per iteration: the indicators of the last logged backward sum to 1
    latest = storage.latest()
    assert sum(latest[prefix + stop][0] for stop in stops) == 1.0
    assert prefix + "lcp_growth" not in keys  # the column-sum penalty has no growth
    # the dynamics' diagnostics only on every DIAGNOSTICS_PERIOD-th iteration (0 and 2)
    assert [prefix + "colsum_p90" in keys for keys in logged] == [True, False, True]
    (refiner,) = [m for _, m in recurrent_modules(model)]
    assert refiner.diagnose is False


def test_test_solver_is_used_at_inference_only():
    model = _build(MASK_YAML, "MODEL.CRBP.GRAD", "bptt", "MODEL.CRBP.TEST_SOLVER", "anderson")
    (refiner,) = [m for _, m in recurrent_modules(model)]
    assert (refiner.solver, refiner.test_solver) == ("fixed_point", "anderson")
    default = _build(MASK_YAML, "MODEL.CRBP.SOLVER", "anderson")
    (refiner,) = [m for _, m in recurrent_modules(default)]
    assert (refiner.solver, refiner.test_solver) == ("anderson", "anderson")


def test_test_steps_used_at_inference():
    model = _build(MASK_YAML, "MODEL.CRBP.TEST_STEPS", 7)
    (refiner,) = [m for _, m in recurrent_modules(model)]
    model.eval()
    refiner(torch.randn(2, 32, 14, 14))
    assert refiner.last_result.steps == 7


def test_dilation_reaches_the_cells_convolutions():
    model = _build(MASK_YAML, "MODEL.CRBP.DILATION", 2)
    (refiner,) = [m for _, m in recurrent_modules(model)]
    assert refiner.cell.w_inh.dilation == refiner.cell.w_exc.dilation == (2, 2)
    assert refiner.cell.w_exc.padding == (2, 2)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.CRBP.GRAD", "bpt", "MODEL.CRBP.GRAD='bpt'"),
        ("MODEL.CRBP.STEPS", 0, "MODEL.CRBP.STEPS=0"),
        ("MODEL.CRBP.LCP_WEIGHT", -1.0, "MODEL.CRBP.LCP_WEIGHT=-1.0"),
        ("MODEL.CRBP.FPN_LEVELS", "['p7']", "MODEL.CRBP.FPN_LEVELS=['p7']"),
        ("MODEL.CRBP.NUM_GROUPS", 5, "MODEL.CRBP.NUM_GROUPS=5"),
        ("MODEL.CRBP.SOLVER", "newton", "MODEL.CRBP.SOLVER='newton'"),
        ("MODEL.CRBP.TEST_SOLVER", "newton", "MODEL.CRBP.TEST_SOLVER='newton'"),
        ("MODEL.CRBP.NORM", "LN", "MODEL.CRBP.NORM='LN'"),
        ("MODEL.CRBP.NORM_GAIN", 0.0, "MODEL.CRBP.NORM_GAIN=0.0"),
        ("MODEL.CRBP.DILATION", 0, "MODEL.CRBP.DILATION=0; expected an integer >= 1"),
        ("MODEL.CRBP.GATE_BIAS_RANGE", "[3.0, 2.0]", "MODEL.CRBP.GATE_BIAS_RANGE=[3.0, 2.0]"),
        ("MODEL.CRBP.DIAGNOSTICS_PERIOD", -1, "MODEL.CRBP.DIAGNOSTICS_PERIOD=-1"),
        ("MODEL.CRBP.LCP_TAU", 0.0, "MODEL.CRBP.LCP_TAU=0.0"),
        ("MODEL.CRBP.LCP_TAU", 1.5, "MODEL.CRBP.LCP_TAU=1.5; expected 0 < tau <= 1"),
        ("MODEL.CRBP.CELL", "hgru", "MODEL.CRBP.CELL='hgru'; choose from"),
        ("MODEL.CRBP.GATE_BIAS_INIT", "log", "MODEL.CRBP.GATE_BIAS_INIT='log'; choose from"),
        ("MODEL.CRBP.LCP_REDUCTION", "max", "MODEL.CRBP.LCP_REDUCTION='max'; choose from"),
        ("MODEL.CRBP.LCP_CROP", -2, "MODEL.CRBP.LCP_CROP=-2"),
        ("MODEL.CRBP.LCP_KIND", "power", "MODEL.CRBP.LCP_KIND='power'; choose from"),
        ("MODEL.CRBP.NEUMANN_STEPS", -1, "MODEL.CRBP.NEUMANN_STEPS=-1; expected an integer >= 0"),
    ],
)
def test_bad_config_values_fail_at_build_time(key, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _build(FPN_YAML, key, value)


def test_spectral_penalty_trains_and_logs_its_growth():
    # The authors' COCO head sums its penalty; the spectral kind acts on the largest growth.
    with pytest.raises(
        ValueError,
        match=r"MODEL.CRBP.LCP_REDUCTION='sum'; with MODEL.CRBP.LCP_KIND='spectral'.*'mean'",
    ):
        _build(MASK_YAML, "MODEL.CRBP.LCP_KIND", "spectral")
    model = _build(
        MASK_YAML,
        *("MODEL.CRBP.LCP_KIND", "spectral", "MODEL.CRBP.LCP_REDUCTION", "mean"),
        *("MODEL.CRBP.LCP_TAU", 0.05),
    )
    (refiner,) = [m for _, m in recurrent_modules(model)]
    assert refiner.lcp_kind == "spectral"
    model.train()
    with EventStorage() as storage:
        losses = model(tiny_batch(empty=()))
        sum(losses.values()).backward()
        keys = set(storage.histories())
    assert losses["loss_lcp"] > 0
    assert "crbp/roi_heads.mask_head.mask_recurrent/lcp_growth" in keys
    assert refiner.last_result.lcp_growth > 0.05


def test_two_cheap_penalties_are_rejected():
    with pytest.raises(
        ValueError, match=r"MODEL.CRBP.LCP_CROP=8; choose at most one .*LCP_SUBSAMPLE=0.5"
    ):
        _build(FPN_YAML, "MODEL.CRBP.LCP_CROP", 8, "MODEL.CRBP.LCP_SUBSAMPLE", 0.5)


@pytest.mark.parametrize(
    "config_file,key,value",
    [(FPN_YAML, "MODEL.CRBP.LCP_CROP", 8), (MASK_YAML, "MODEL.CRBP.LCP_SUBSAMPLE", 2.0)],
)
def test_cheap_penalty_reaches_loss_dict(config_file, key, value):
    model = _build(config_file, key, value, "MODEL.CRBP.LCP_TAU", 0.05)
    losses = _train_step(model, tiny_batch(empty=()))
    assert losses["loss_lcp"] > 0
    samples = [m.last_lcp_sample for _, m in recurrent_modules(model)]
    assert all(s is not None for s in samples), samples


def test_unknown_config_key_is_rejected():
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.CRBP.STEP"):
        tiny_cfg(FPN_YAML, "MODEL.CRBP.STEP", 3)


def _roi_instances(sizes, image=32):
    from detectron2.structures import BitMasks, Boxes, Instances

    out, start = [], 0
    for n in sizes:
        inst = Instances((image, image))
        boxes = torch.tensor([[2.0, 2.0, 20.0 + i, 24.0] for i in range(n)])
        inst.proposal_boxes = Boxes(boxes)
        inst.gt_classes = torch.zeros(n, dtype=torch.long)
        masks = torch.zeros(n, image, image, dtype=torch.bool)
        masks[:, 4:16, 4:18] = True
        inst.gt_masks = BitMasks(masks)
        inst.roi_id = torch.arange(start, start + n)
        out.append(inst)
        start += n
    return out


def test_mask_head_trains_on_at_most_train_rois_per_image():
    """MASK_TRAIN_ROIS: each image keeps min(n, cap) of its ROIs, feature rows and
    instances stay paired, and the loss is the stock loss on exactly those ROIs."""
    from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss

    head = _build(MASK_YAML, "MODEL.CRBP.MASK_TRAIN_ROIS", 2, "MODEL.CRBP.STEPS", 2)
    head = head.roi_heads.mask_head.train()
    assert head.train_rois == 2
    instances = _roi_instances([5, 1, 3])
    channels = head.deconv.in_channels
    x = torch.arange(9.0).view(9, 1, 1, 1).expand(9, channels, 14, 14).contiguous()
    seen = {}
    head.mask_recurrent.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    torch.manual_seed(0)
    with EventStorage():
        loss = head(x, instances)["loss_mask"]
    rows = seen["x"][:, 0, 0, 0].long()
    assert rows.tolist() == sorted(set(rows.tolist()))  # distinct, in image order
    per_image = [int(((rows >= a) & (rows < b)).sum()) for a, b in ((0, 5), (5, 6), (6, 9))]
    assert per_image == [2, 1, 2]
    kept = [inst[torch.isin(inst.roi_id, rows)] for inst in instances]
    with EventStorage():
        expected = mask_rcnn_loss(head.layers(x[rows]), kept) * head.loss_weight
    torch.testing.assert_close(loss, expected)

    head.train_rois = 9  # a cap above every image's count keeps all ROIs
    torch.manual_seed(0)
    with EventStorage():
        full = head(x, instances)["loss_mask"]
    assert seen["x"].shape[0] == 9
    head.eval()  # inference never subsamples
    with torch.no_grad():
        head(x, _roi_boxes_only(instances))
    assert seen["x"].shape[0] == 9 and torch.isfinite(full)


def _roi_boxes_only(instances):
    from detectron2.structures import Instances

    out = []
    for inst in instances:
        pred = Instances(inst.image_size)
        pred.pred_boxes = inst.proposal_boxes
        pred.pred_classes = inst.gt_classes
        out.append(pred)
    return out


def test_mask_train_rois_is_validated_at_build_time():
    with pytest.raises(ValueError, match=r"MODEL.CRBP.MASK_TRAIN_ROIS=-1; expected an integer"):
        _build(MASK_YAML, "MODEL.CRBP.MASK_TRAIN_ROIS", -1)
