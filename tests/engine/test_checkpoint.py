"""crbp_panoptic.engine.checkpoint and the tools that evaluate a model: trained weights that fit,
or an error naming MODEL.WEIGHTS; random weights only on request."""

import logging
import shutil

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser

from crbp_panoptic.engine import train_or_evaluate
from crbp_panoptic.engine.checkpoint import (
    WeightsError,
    check_weights_given,
    drop_modules,
    load_trained_weights,
    recurrent_key_groups,
)

from tests.tiny import CONFIGS, REPO, TINY, load_tool, tiny_cfg

SYNTHETIC = "Synthetic-PanopticSegmentation/"
STOCK, FPN, MASK = (
    "panoptic_fpn_R_18_quick.yaml",
    "panoptic_crbp_fpn_R_18_quick.yaml",
    "panoptic_crbp_mask_R_18_quick.yaml",
)
AUTHORS_MASK = "panoptic_crbp_mask_authors_cell_R_18_quick.yaml"
TINY_OPTS = [str(v) for v in TINY]


def _model(config, seed=0, *opts):
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    return build_model(tiny_cfg(SYNTHETIC + config, *opts)).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """config -> a checkpoint of that tiny model (seed 0), as training saves it."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for config in (STOCK, FPN, MASK):
        save_dir = root / config.split(".")[0]
        save_dir.mkdir()
        DetectionCheckpointer(_model(config), save_dir=str(save_dir)).save("model_final")
        paths[config] = str(save_dir / "model_final.pth")
    return paths


def _saved(path):
    return torch.load(path, weights_only=False)["model"]


def test_recurrent_keys_are_those_a_stock_model_lacks():
    stock = set(_model(STOCK).state_dict())
    for config in (FPN, MASK):
        model = _model(config)
        groups = recurrent_key_groups(model)
        own = set().union(*groups.values())
        assert own == set(model.state_dict()) - stock
    assert sorted(recurrent_key_groups(_model(FPN))) == [
        f"backbone.fpn_lateral{k}" for k in (3, 4, 5)
    ]
    assert sorted(recurrent_key_groups(_model(MASK))) == ["roi_heads.mask_head"]


def test_a_checkpoint_of_the_same_model_fills_every_weight(checkpoints):
    model = _model(FPN, seed=1)
    load_trained_weights(model, checkpoints[FPN])
    saved = _saved(checkpoints[FPN])
    state = model.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.parametrize("config", [FPN, MASK, AUTHORS_MASK])
def test_a_stock_checkpoint_fills_all_but_the_recurrent_weights(checkpoints, config, caplog):
    model = _model(config, seed=1)  # AUTHORS_MASK: a BatchNorm readout (a counter, no weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        load_trained_weights(model, checkpoints[STOCK])
    stock, state = _saved(checkpoints[STOCK]), model.state_dict()
    own = set().union(*recurrent_key_groups(model).values())
    for key, value in state.items():
        expected = before[key] if key in own else stock[key]
        assert torch.equal(value, expected), key
    warning = "no weights for the recurrent modules"
    assert any(warning in r.getMessage() for r in caplog.records), caplog.text
    assert ("mask_fcn* convs in it are not used" in caplog.text) == (config != FPN)


def test_a_mask_head_checkpoint_in_a_recurrent_fpn_model_is_refused_with_its_keys(checkpoints):
    with pytest.raises(WeightsError) as e:
        load_trained_weights(_model(FPN), checkpoints[MASK])
    message = str(e.value)
    missing, unexpected = message.split("in the checkpoint but not in the model:")
    assert f"MODEL.WEIGHTS '{checkpoints[MASK]}' does not fit the model" in missing
    assert "roi_heads.mask_head.mask_fcn1.{bias, weight}" in missing
    assert "recurrent" not in missing  # the FPN's hGRUs may be absent: they are its own
    assert "roi_heads.mask_head.mask_recurrent.cell.{" in unexpected
    assert "roi_heads.mask_head.mask_recurrent_norm.{bias, weight}" in unexpected


def test_a_partly_missing_recurrent_module_or_a_wrong_shape_is_refused(checkpoints, tmp_path):
    checkpoint = torch.load(checkpoints[FPN], weights_only=False)
    del checkpoint["model"]["backbone.fpn_lateral4.recurrent.cell.alpha"]
    partial = tmp_path / "partial.pth"
    torch.save(checkpoint, partial)
    with pytest.raises(WeightsError, match=r"missing from the checkpoint:\n +backbone\.fpn_lat"):
        load_trained_weights(_model(FPN), str(partial))
    four_classes = _model(FPN, 0, "MODEL.ROI_HEADS.NUM_CLASSES", "4")
    with pytest.raises(WeightsError) as e:
        load_trained_weights(four_classes, checkpoints[FPN])
    assert "roi_heads.box_predictor.cls_score.weight: (4, 64) -> (5, 64)" in str(e.value)


def test_fresh_modules_may_differ_and_everything_else_is_loaded(checkpoints):
    shallow = _model(
        STOCK, 1, "MODEL.ROI_MASK_HEAD.NUM_CONV", "1", "MODEL.ROI_MASK_HEAD.CONV_DIM", "8"
    )
    with pytest.raises(WeightsError, match=r"mask_fcn2\.\{bias, weight\}"):
        load_trained_weights(shallow, checkpoints[STOCK])
    load_trained_weights(shallow, checkpoints[STOCK], fresh=["roi_heads.mask_head."])
    stock = _saved(checkpoints[STOCK])
    for key, value in shallow.state_dict().items():
        if not key.startswith("roi_heads.mask_head."):
            assert torch.equal(value, stock[key]), key


def test_drop_modules_leaves_those_modules_at_their_initialisation(checkpoints, tmp_path):
    dest = str(tmp_path / "start.pth")
    dropped = drop_modules(checkpoints[STOCK], ["roi_heads.mask_head."], dest)
    saved, kept = _saved(checkpoints[STOCK]), _saved(dest)
    assert dropped == sorted(k for k in saved if k.startswith("roi_heads.mask_head."))
    assert {k.split(".")[2] for k in dropped} == {f"mask_fcn{i}" for i in (1, 2, 3, 4)} | {
        "deconv",
        "predictor",
    }
    assert sorted(kept) == sorted(set(saved) - set(dropped))
    assert all(torch.equal(kept[k], saved[k]) for k in kept)

    # Loaded for training: everything but the mask head comes from the checkpoint.
    model = _model(STOCK, 1)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    DetectionCheckpointer(model).load(dest, checkpointables=[])
    now = model.state_dict()
    assert all(torch.equal(now[k], init[k]) for k in dropped)
    assert all(torch.equal(now[k], saved[k]) for k in kept)

    with pytest.raises(ValueError, match=r"no key is under \['roi_heads.mask_hed.'\]"):
        drop_modules(checkpoints[STOCK], ["roi_heads.mask_hed."], str(tmp_path / "x.pth"))
    assert not (tmp_path / "x.pth").exists()


def test_weights_must_be_given_exist_and_be_a_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="MODEL.WEIGHTS is empty.*--random-weights"):
        check_weights_given("")
    assert check_weights_given("", random_weights=True) == ""
    assert check_weights_given("nope.pth", random_weights=True) == ""  # not loaded: not checked
    with pytest.raises(WeightsError, match=f"MODEL.WEIGHTS '{tmp_path / 'x.pth'}': no such file"):
        check_weights_given(str(tmp_path / "x.pth"))
    notes = tmp_path / "notes.pth"
    notes.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=f"MODEL.WEIGHTS '{notes}' cannot be read as a check"):
        load_trained_weights(_model(FPN), check_weights_given(str(notes)))


# The tools: nothing runs on random weights unless asked.


def _export(tmp_path, *opts):
    argv = ["--config-file", str(CONFIGS / SYNTHETIC / FPN), "--output", str(tmp_path / "ts")]
    return load_tool("export_model").main([*argv, "--steps", "2", *opts])


def _dynamics(tmp_path, image, *opts):
    argv = ["--config-file", str(CONFIGS / SYNTHETIC / FPN), "--input", image]
    return load_tool("visualize_dynamics").main([*argv, "--output", str(tmp_path / "dyn"), *opts])


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "a.png"
    Image.new("RGB", (64, 64), (30, 140, 60)).save(path)
    return str(path)


@pytest.mark.parametrize("tool", ["export_model", "visualize_dynamics"])
def test_tools_refuse_to_run_without_weights_or_with_weights_that_do_not_fit(
    tool, checkpoints, image, tmp_path
):
    run = (
        (lambda *o: _export(tmp_path, *o))
        if tool == "export_model"
        else (lambda *o: _dynamics(tmp_path, image, *o))
    )
    with pytest.raises(SystemExit, match=rf"{tool}.py: MODEL.WEIGHTS is empty.*--random-weights"):
        run(*TINY_OPTS)
    with pytest.raises(SystemExit, match="does not fit the model:\n  missing from the checkpoint"):
        run(*TINY_OPTS, "MODEL.WEIGHTS", checkpoints[MASK])
    assert not (tmp_path / "ts").exists() and not (tmp_path / "dyn").exists()


def test_export_runs_on_random_weights_when_asked(tmp_path):
    path, diff = _export(tmp_path, "--random-weights", *TINY_OPTS)
    assert diff == 0 and (tmp_path / "ts" / "model.ts").is_file()


def _eval_args(tmp_path, *opts, parser=None, flags=()):
    parser = parser or default_argument_parser()
    return parser.parse_args(
        [
            "--config-file",
            str(REPO / "configs" / SYNTHETIC / FPN),
            "--eval-only",
            *flags,
            *TINY_OPTS,
            "OUTPUT_DIR",
            str(tmp_path),
            "DATASETS.TEST",
            "()",
            *opts,
        ]
    )


def test_eval_only_needs_weights_that_fit(checkpoints, tmp_path):
    with pytest.raises(WeightsError, match="MODEL.WEIGHTS is empty.*--random-weights"):
        train_or_evaluate(_eval_args(tmp_path))
    with pytest.raises(WeightsError, match="does not fit the model"):
        train_or_evaluate(_eval_args(tmp_path, "MODEL.WEIGHTS", checkpoints[MASK]))
    assert train_or_evaluate(_eval_args(tmp_path, "MODEL.WEIGHTS", checkpoints[FPN])) == {}
    # --resume evaluates the last checkpoint of OUTPUT_DIR, as strictly.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name, config in (("model_0000001.pth", MASK), ("model_0000002.pth", FPN)):
        shutil.copy(checkpoints[config], resumed / name)
        (resumed / "last_checkpoint").write_text(name)
        args = _eval_args(resumed, flags=["--resume"])
        if config == MASK:
            last = f"the last checkpoint '{resumed / name}' does not fit the model"
            with pytest.raises(WeightsError, match=last):
                train_or_evaluate(args)
        else:
            assert train_or_evaluate(args) == {}
    # tools/train_net.py's parser adds --random-weights to Detectron2's flags.
    parser = load_tool("train_net").argument_parser()
    args = _eval_args(tmp_path, parser=parser, flags=["--random-weights"])
    assert args.random_weights and train_or_evaluate(args) == {}
