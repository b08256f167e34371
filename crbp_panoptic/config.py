"""The ``MODEL.CRBP`` config subtree.

Read order for a newcomer: this file, then ``modeling/backbone.py`` and
``modeling/mask_head.py``, then the engine in ``crbp/``.
"""

__all__ = ["add_crbp_config"]


def add_crbp_config(cfg):
    """Add the ``MODEL.CRBP`` keys (with defaults) to a Detectron2 config, in place.

    Both recurrent placements (the C-RBP FPN backbone and ``CRBPMaskHead``) read these
    keys; values are validated when the model is built (``modeling/config_args.py``).

    Args:
        cfg (CfgNode): a Detectron2 config (``detectron2.config.get_cfg()``).
    """
    _CN = type(cfg)  # Detectron2's CfgNode, without importing Detectron2 here.
    cfg.MODEL.CRBP = _CN()
    crbp = cfg.MODEL.CRBP
    # Training rule: "crbp" (RBP + LCP), "rbp", "bptt" or "cbptt" (BPTT + LCP).
    crbp.GRAD = "crbp"
    # Recurrent steps T in training (the paper's COCO model: 20).
    crbp.STEPS = 20
    # Steps at inference; 0 = same as STEPS. May exceed STEPS (stability beyond training).
    crbp.TEST_STEPS = 0
    # Max terms K of the Neumann series sum_k (J^T)^k g in the RBP backward pass.
    crbp.NEUMANN_STEPS = 15
    # Weight of the penalty in the loss dict (`loss_lcp`), applied to it as LCP_REDUCTION
    # reduces it. The authors' COCO model: a sum weighted by 1e-3; 1e3 on the mean equals that
    # at 1e6 state elements (~20 ROIs x 256 x 14 x 14). docs/DESIGN.md, "Training modes".
    crbp.LCP_WEIGHT = 1000.0
    # Penalty reduction over the state's elements: "mean" or "sum" (the authors' COCO model).
    crbp.LCP_REDUCTION = "mean"
    # tau in (0, 1]: bound on the column sums 1^T J of the step's Jacobian (relu(u - tau)^2).
    crbp.LCP_TAU = 0.9
    # Penalty kind: "colsum" = the paper's LCP on the signed column sums 1^T J (the default);
    # "spectral" = relu(max over rows of ||J v|| - LCP_TAU)^2, v the forward's last difference
    # (one JVP): the growth per Neumann term (needs LCP_REDUCTION "mean").
    crbp.LCP_KIND = "colsum"
    # Cheap penalty: fraction (0, 1) or count (>= 1) of batch rows (ROIs / images) the
    # penalty is evaluated on; 0 = exact penalty on every row.
    crbp.LCP_SUBSAMPLE = 0.0
    # Cheap penalty for large maps (FPN levels): side of a random square crop of positions
    # the penalty is evaluated on (an approximation, see crbp/lcp.py); 0 = off.
    crbp.LCP_CROP = 0
    # Forward solver: "fixed_point" (plain iteration) or "anderson" (Anderson acceleration).
    crbp.SOLVER = "fixed_point"
    # Forward solver at inference; "" = SOLVER. "anderson" is allowed here with any GRAD.
    crbp.TEST_SOLVER = ""
    # Training: stop the forward iteration once ||h_t - h_{t-1}|| / ||h_t|| < this; 0 = run STEPS.
    crbp.FORWARD_TOL = 0.0
    # Inference: the same early stop at test time (TEST_STEPS is then a maximum); 0 = run
    # TEST_STEPS exactly. 1e-2 cost no PQ on the synthetic models (docs/results/speed_cpu.md).
    crbp.TEST_TOL = 0.01
    # RBP backward: stop the Neumann series once a term is below this fraction of the sum; 0 = off.
    crbp.NEUMANN_TOL = 0.0
    # hGRU cell equations: "less_softplus" (the authors' COCO cell), "kappa_omega" (ours) or
    # "pathfinder" (the authors' Pathfinder cell); crbp/hgru.py has each.
    crbp.CELL = "kappa_omega"
    # hGRU cell: kernel size of the inhibition / excitation convolutions.
    crbp.KERNEL_SIZE = 3
    # hGRU cell: dilation of the inhibition / excitation convolutions (reach per step
    # DILATION x (KERNEL_SIZE - 1) / 2 pixels, same parameters); 1 = the authors' cells.
    crbp.DILATION = 1
    # hGRU cell normalisation: "GN" (GroupNorm, the paper's COCO cell), "BN" (batch
    # statistics) or "none".
    crbp.NORM = "GN"
    # hGRU cell: GroupNorm groups (must divide the channel count).
    crbp.NUM_GROUPS = 32
    # hGRU cell: initial weight of its two normalisations (the authors: 0.1).
    crbp.NORM_GAIN = 0.1
    # hGRU cell: gate biases b1 ~ [lo, hi] drawn as GATE_BIAS_INIT says, b2 = -b1; hi 0 = STEPS - 1.
    crbp.GATE_BIAS_RANGE = [1.0, 0.0]
    # hGRU cell: "chronos" (b1 = log U(lo, hi), as intended) or "raw" (b1 = U(lo, hi), the
    # authors' trained models: their logarithm never took effect).
    crbp.GATE_BIAS_INIT = "chronos"
    # hGRU cell: the authors' GALA gate (channel x spatial gates) for g1 instead of a 1x1 conv.
    crbp.GALA = False
    # Log each recurrent module's state contrast and Jacobian column sums (crbp/<module>/...)
    # every this many training iterations; 0 = never. Costs one extra step and VJP.
    crbp.DIAGNOSTICS_PERIOD = 20
    # Recurrent mask head: normalisation of the equilibrium state before the deconv: "GN",
    # "BN", "SyncBN" (the authors' COCO model) or "" (none).
    crbp.MASK_OUTPUT_NORM = "GN"
    # Learning-rate factor of the ROI mask head's parameters, stock or recurrent
    # (SOLVER.BASE_LR x this); 1 = the mask head learns at the model's rate.
    crbp.MASK_HEAD_LR_FACTOR = 1.0
    # Recurrent mask head, training: at most this many foreground ROIs per image (a random
    # subset) go through the hGRU and the mask loss; 0 = all. Inference sees every detection.
    crbp.MASK_TRAIN_ROIS = 0
    # Recurrent FPN backbone: the FPN levels whose lateral feature is refined to equilibrium.
    crbp.FPN_LEVELS = ["p2", "p3", "p4", "p5"]
    # Recurrent FPN backbone: hGRU channels; other than MODEL.FPN.OUT_CHANNELS adds 1x1
    # projections in and out (a bottleneck: a step costs ~(this / OUT_CHANNELS)^2); 0 = same.
    crbp.FPN_CHANNELS = 0
