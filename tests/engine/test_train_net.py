"""crbp_panoptic.engine.setup (what tools/train_net.py runs) end to end on tiny synthetic data:
train, eval-only, resume, 2 processes."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detectron2.engine import default_argument_parser

from crbp_panoptic.data import register_synthetic_panoptic
from crbp_panoptic.engine import Trainer, launch, setup, train_or_evaluate
from crbp_panoptic.engine.trainer import CheckpointReadError

from tests.tiny import REPO, load_tool, register_tiny_datasets, tiny_train_opts

CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def _register(root):
    register_tiny_datasets(root, "engine_test")
    # Landscape images next to the square (portrait for Detectron2) ones of engine_test_train.
    register_synthetic_panoptic(
        "engine_test_wide", root=root, split="train", num_images=2, image_size=(48, 64), seed=3
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    _register(root)
    return root


def _tiny_opts(output_dir, train="engine_test_train_separated"):
    return tiny_train_opts(output_dir, train, "engine_test_val_separated")


def _args(output_dir, *opts, train="engine_test_train_separated", extra=()):
    return default_argument_parser().parse_args(
        [
            "--config-file",
            str(REPO / CONFIG),
            *extra,
            *_tiny_opts(output_dir, train),
            *[str(o) for o in opts],
        ]
    )


def _losses(trainer, key="total_loss"):
    return {it: v for v, it in trainer.storage.history(key).values()}


def test_training_gives_finite_losses_and_lcp(datasets, tmp_path):
    cfg = setup(_args(tmp_path, "DATASETS.TEST", "()"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    last = [m for m in metrics if "total_loss" in m][-1]
    assert last["iteration"] == 2
    assert math.isfinite(last["total_loss"])
    assert "loss_lcp" in last and math.isfinite(last["loss_lcp"])
    assert any(k.startswith("crbp/backbone.fpn_lateral") for k in last), sorted(last)
    assert (tmp_path / "model_final.pth").is_file()


def test_eval_only_prints_pq(datasets, tmp_path, capfd):
    train_or_evaluate(_args(tmp_path))
    capfd.readouterr()
    results = train_or_evaluate(
        _args(
            tmp_path / "eval", "MODEL.WEIGHTS", tmp_path / "model_final.pth", extra=["--eval-only"]
        )
    )
    out = capfd.readouterr().out
    assert "Panoptic Evaluation Results" in out and "PQ" in out
    pq = results["panoptic_seg"]
    assert {"PQ", "PQ_th", "PQ_st"} <= set(pq) and all(
        math.isfinite(pq[k]) for k in ("PQ", "PQ_st")
    )
    assert "sem_seg" in results and "mIoU" in results["sem_seg"]


def _train(output_dir, *opts, resume=False, extra=()):
    return train_or_evaluate(
        _args(output_dir, *opts, extra=(["--resume"] if resume else []) + list(extra))
    )


def _assert_same_checkpoint(expected_path, actual_path):
    """Every entry of two checkpoints equal, tensors bit for bit (weights, optimizer state,
    scheduler, random-number states, data position)."""
    expected, actual = (
        torch.load(p, map_location="cpu", weights_only=False) for p in (expected_path, actual_path)
    )
    differ = []

    def walk(a, b, key):
        if isinstance(a, torch.Tensor):
            if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)):
                differ.append(key)
        elif isinstance(a, dict):
            if set(a) != set(b):
                differ.append(f"{key} keys {sorted(set(a) ^ set(b))}")
            for k in set(a) & set(b):
                walk(a[k], b[k], f"{key}/{k}")
        elif isinstance(a, (list, tuple)):
            if len(a) != len(b):
                differ.append(key)
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{key}[{i}]")
        elif a != b:
            differ.append(key)

    walk(expected, actual, "")
    assert len(expected["model"]) > 100  # the whole model, not a part of it
    assert not differ, f"{len(differ)} entries differ, e.g. {differ[:5]}"


def _interrupted_copy(full_dir, iteration, resumed_dir):
    """``resumed_dir`` as a run killed right after checkpointing ``iteration`` leaves it:
    that checkpoint, named by last_checkpoint, and nothing later."""
    resumed_dir.mkdir()
    name = f"model_{iteration:07d}.pth"
    shutil.copy(full_dir / name, resumed_dir / name)
    (resumed_dir / "last_checkpoint").write_text(name)


# Six images of both orientations in batches of two, two scales and random flips: the
# sampler's order, the aspect-ratio groups and the augmentation all matter. An evaluation
# runs after the checkpoint of iteration 2.
_RESUME_OPTS = (
    "DATASETS.TRAIN",
    "('engine_test_train_separated', 'engine_test_wide_separated')",
    "INPUT.MIN_SIZE_TRAIN",
    "(48, 64)",
    "SOLVER.MAX_ITER",
    5,
    "SOLVER.CHECKPOINT_PERIOD",
    1,
    "TEST.EVAL_PERIOD",
    3,
)


def test_the_test_split_changes_the_evaluation_and_not_the_training(datasets, tmp_path):
    # compare_configs --rescore and the suites' TEST_SPLIT rely on this
    _train(tmp_path / "val")
    _train(tmp_path / "wide", "DATASETS.TEST", "('engine_test_wide_separated',)")
    val, wide = tmp_path / "val", tmp_path / "wide"
    _assert_same_checkpoint(val / "model_final.pth", wide / "model_final.pth")
    results = "Evaluation results for engine_test_{}_separated"
    assert results.format("val") in (val / "log.txt").read_text()
    log = (wide / "log.txt").read_text()  # (the first run's log.txt also gets the second's)
    assert results.format("wide") in log and results.format("val") not in log


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_any_checkpoint_ends_with_the_same_weights(datasets, tmp_path, workers):
    opts = _RESUME_OPTS + ("DATALOADER.NUM_WORKERS", workers)
    _train(tmp_path / "full", *opts)
    for iteration in (0, 2):  # resumed after the first checkpoint, and after the evaluation
        resumed = tmp_path / f"resumed_{iteration}"
        _interrupted_copy(tmp_path / "full", iteration, resumed)
        _train(resumed, *opts, resume=True)
        assert (
            f"Starting training from iteration {iteration + 1}" in (resumed / "log.txt").read_text()
        )
        _assert_same_checkpoint(tmp_path / "full" / "model_final.pth", resumed / "model_final.pth")


_CHILD = """
import sys
from detectron2.engine import default_argument_parser
from crbp_panoptic.engine import train_or_evaluate
from tests.engine.test_train_net import _register
_register(sys.argv[1])
train_or_evaluate(default_argument_parser().parse_args(sys.argv[2:]))
"""


def _named_checkpoint(output_dir):
    """The file last_checkpoint names, once both are written (None before)."""
    try:
        name = (output_dir / "last_checkpoint").read_text().strip()
    except FileNotFoundError:
        return None
    return name if name and (output_dir / name).is_file() else None


def test_resume_after_sigkill_ends_with_the_same_weights(datasets, tmp_path):
    opts = _RESUME_OPTS[:4] + (
        "SOLVER.MAX_ITER",
        8,
        "SOLVER.CHECKPOINT_PERIOD",
        2,
        "DATASETS.TEST",
        "()",
    )
    _train(tmp_path / "full", *opts)
    killed = tmp_path / "killed"
    args = [str(a) for a in ["--config-file", REPO / CONFIG, *_tiny_opts(killed), *opts]]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, datasets, *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while _named_checkpoint(killed) is None and child.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
    output = (tmp_path / "child.log").read_text()[-2000:]
    assert child.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{output}"
    assert _named_checkpoint(killed) != "model_final.pth"

    _train(killed, *opts, resume=True)
    _assert_same_checkpoint(tmp_path / "full" / "model_final.pth", killed / "model_final.pth")


def test_resume_from_a_truncated_checkpoint_names_it_and_the_earlier_ones(datasets, tmp_path):
    opts = ("SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 1, "DATASETS.TEST", "()")
    _train(tmp_path, *opts)
    final = tmp_path / "model_final.pth"
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])  # killed while copying

    with pytest.raises(CheckpointReadError) as info:
        _train(tmp_path, *opts, resume=True)
    message = str(info.value)
    assert f"cannot read the last checkpoint {final}" in message
    assert str(tmp_path / "last_checkpoint") in message
    assert "model_0000001.pth, model_0000000.pth" in message  # newest first
    assert "MODEL.WEIGHTS" in message and "--resume" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no torch traceback
    with pytest.raises(
        SystemExit, match=r"^train_net.py: --resume: cannot read the last checkpoint"
    ):
        load_tool("train_net").main(_args(tmp_path, *opts, extra=["--resume"]))

    # The advice works: name an earlier checkpoint, and the run resumes from it.
    (tmp_path / "last_checkpoint").write_text("model_0000000.pth")
    _train(tmp_path, *opts, resume=True)
    assert "Starting training from iteration 1" in (tmp_path / "log.txt").read_text()
    torch.load(final, weights_only=False)  # rewritten whole


def test_resume_with_an_empty_last_checkpoint_says_so(datasets, tmp_path):
    opts = ("SOLVER.MAX_ITER", 1, "SOLVER.CHECKPOINT_PERIOD", 1, "DATASETS.TEST", "()")
    _train(tmp_path, *opts)
    (tmp_path / "last_checkpoint").write_text("")
    with pytest.raises(
        CheckpointReadError,
        match=r"(?s)last_checkpoint is empty; it names no checkpoint.*"
        r"model_final.pth, model_0000000.pth",
    ):
        _train(tmp_path, *opts, resume=True)


def _ddp_main(args, out_dir, datasets_root):
    _register(datasets_root)  # a spawned process starts with Detectron2's builtin catalog only
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    from detectron2.utils import comm

    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    assert comm.get_world_size() == 2
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    result = {"params": flat}
    if comm.is_main_process():  # Detectron2 gathers the losses of all ranks into rank 0's storage
        result.update(losses=_losses(trainer), lcp=_losses(trainer, "loss_lcp"))
    torch.save(result, Path(out_dir) / f"rank{comm.get_rank()}.pt")


def test_two_cpu_processes_keep_parameters_identical_and_resume_exactly(datasets, tmp_path):
    # Each process has its own share of the data and its own random numbers (ROI sampling):
    # a resume restores both in every process.
    opts = _RESUME_OPTS[:4] + (
        "SOLVER.IMS_PER_BATCH",
        4,
        "SOLVER.CHECKPOINT_PERIOD",
        1,
        "MODEL.CRBP.GRAD",
        "crbp",
        "DATASETS.TEST",
        "()",
    )
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    launch(_ddp_main, 2, dist_url="auto", args=(_args(full, *opts), str(full), datasets))
    r0, r1 = (torch.load(full / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])
    assert len(r0["losses"]) == 3 and all(math.isfinite(v) for v in r0["losses"].values())
    assert len(r0["lcp"]) == 3  # the penalty's double backward ran under DDP

    _interrupted_copy(full, 0, resumed)
    args = _args(resumed, *opts, extra=["--resume"])
    launch(_ddp_main, 2, dist_url="auto", args=(args, str(resumed), datasets))
    assert sorted(torch.load(resumed / "rank0.pt")["losses"]) == [1, 2]
    _assert_same_checkpoint(full / "model_final.pth", resumed / "model_final.pth")
    checkpoint = torch.load(resumed / "model_final.pth", weights_only=False)
    assert len(checkpoint["trainer"]["hooks"]["RNGStateHook"]["ranks"]) == 2


def test_unknown_dataset_lists_registered_names(datasets, tmp_path):
    with pytest.raises(
        KeyError, match=r"'no_such_dataset'.*registered:.*engine_test_val_separated"
    ):
        train_or_evaluate(_args(tmp_path, "DATASETS.TEST", "('no_such_dataset',)"))


def test_missing_coco_files_fail_before_training(datasets, tmp_path):
    # The builtin COCO registration points at $DETECTRON2_DATASETS/coco/..., absent here.
    with pytest.raises(
        FileNotFoundError, match=r"coco_2017_val_panoptic_separated.*DETECTRON2_DATASETS"
    ):
        train_or_evaluate(_args(tmp_path, "DATASETS.TEST", "('coco_2017_val_panoptic_separated',)"))
    assert not (tmp_path / "model_final.pth").exists()
