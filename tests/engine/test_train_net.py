"""crbp_panoptic.engine.setup (what tools/train_net.py runs) end to end on tiny synthetic data:
train, eval-only, resume, 2 processes."""

import json
import math
from pathlib import Path

import pytest
import torch

from detectron2.engine import HookBase, default_argument_parser

from crbp_panoptic.engine import Trainer, launch, setup, train_or_evaluate

from tests.tiny import REPO, register_tiny_datasets, tiny_train_opts

CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def _register(root):
    register_tiny_datasets(root, "engine_test")


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


class _StopAfter(HookBase):
    """Simulates a crash: raises once iteration ``stop`` has finished (and been checkpointed)."""

    def __init__(self, stop):
        self.stop = stop

    def after_step(self):
        if self.trainer.iter == self.stop:
            raise KeyboardInterrupt("simulated interruption")


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


def test_resume_continues_with_the_same_losses(datasets, tmp_path):
    opts = ("SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2, "DATASETS.TEST", "()")
    one = "engine_test_one_separated"  # one image: batches do not depend on sampler order

    full = Trainer(setup(_args(tmp_path / "full", *opts, train=one)))
    full.resume_or_load(resume=False)
    full.train()

    first = Trainer(setup(_args(tmp_path / "resumed", *opts, train=one)))
    first.resume_or_load(resume=False)
    first.register_hooks([_StopAfter(1)])
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert (tmp_path / "resumed" / "model_0000001.pth").is_file()

    second = Trainer(setup(_args(tmp_path / "resumed", *opts, train=one)))
    second.resume_or_load(resume=True)
    assert second.start_iter == 2
    second.train()

    expected, resumed = _losses(full), _losses(second)
    assert sorted(resumed) == [2, 3]
    for it in (2, 3):
        assert resumed[it] == pytest.approx(expected[it], rel=1e-5), (it, resumed, expected)


def _ddp_main(args, out_dir, datasets_root):
    _register(datasets_root)  # a spawned process starts with Detectron2's builtin catalog only
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    from detectron2.utils import comm

    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    assert comm.get_world_size() == 2
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    result = {"params": flat}
    if comm.is_main_process():  # Detectron2 gathers the losses of all ranks into rank 0's storage
        result.update(losses=_losses(trainer), lcp=_losses(trainer, "loss_lcp"))
    torch.save(result, Path(out_dir) / f"rank{comm.get_rank()}.pt")


def test_two_cpu_processes_keep_parameters_identical(datasets, tmp_path):
    args = _args(
        tmp_path, "SOLVER.IMS_PER_BATCH", 4, "MODEL.CRBP.GRAD", "crbp", "DATASETS.TEST", "()"
    )
    launch(_ddp_main, 2, dist_url="auto", args=(args, str(tmp_path), datasets))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])
    assert len(r0["losses"]) == 3 and all(math.isfinite(v) for v in r0["losses"].values())
    assert len(r0["lcp"]) == 3  # the penalty's double backward ran under DDP


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
