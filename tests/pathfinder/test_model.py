"""Tests of the Pathfinder model: front end, readout shape, loss, a training step per mode."""

import dataclasses

import pytest
import torch

from crbp_panoptic.crbp import MODES
from crbp_panoptic.pathfinder.generator import PathfinderConfig, PathfinderDataset
from crbp_panoptic.pathfinder.model import (
    GaborEnergy,
    PathfinderNet,
    gabor_bank,
    iou_f1,
    segmentation_loss,
)
from crbp_panoptic.pathfinder.train import SCALES, build_model, saved_tensor_bytes

SMALL = dict(
    channels=6, kernel_size=3, gabor_size=5, variant="pathfinder", norm="BN", norm_gain=1.0
)


def _batch(n=2, size=24):
    ds = PathfinderDataset(PathfinderConfig(size=size, path_length=3, distractors=1), n, seed=0)
    items = [ds[i] for i in range(n)]
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def test_gabor_bank_is_zero_mean_and_normalised():
    bank = gabor_bank(25, 7)
    assert bank.shape == (25, 1, 7, 7)
    assert bank.sum(dim=(1, 2, 3)).abs().max() < 1e-5
    x = GaborEnergy(25, 7)(torch.zeros(1, 1, 16, 16))
    assert x.shape == (1, 25, 16, 16) and x.abs().max() == 0
    with pytest.raises(ValueError, match="channels"):
        gabor_bank(2, 7)
    with pytest.raises(ValueError, match="kernel_size"):
        gabor_bank(8, 4)
    assert not any(p.requires_grad for p in GaborEnergy(8, 5).parameters())


def test_drive_gain_scales_the_drive():
    image, _ = _batch(1)
    torch.testing.assert_close(GaborEnergy(9, 5, gain=10.0)(image), 10 * GaborEnergy(9, 5)(image))
    with pytest.raises(ValueError, match="gain"):
        GaborEnergy(9, 5, gain=0.0)


def test_build_model_uses_the_settings_cell():
    s = dataclasses.replace(SCALES["cpu"], norm_gain=0.7, drive_gain=3.0)
    net = build_model(s, "crbp:20")
    cell = net.cell
    assert cell.variant == "pathfinder" and isinstance(cell.norm_exc, torch.nn.BatchNorm2d)
    assert not cell.norm_exc.track_running_stats
    assert torch.all(cell.norm_exc.weight == 0.7) and net.frontend.gain == 3.0
    assert cell.kernel_size == s.kernel_size and cell.channels == s.channels
    ref = net.refiner
    assert (ref.mode, ref.steps, ref.lcp_kind, ref.neumann_steps) == ("crbp", 20, "colsum", 15)


def test_build_model_takes_the_arm_options():
    s = dataclasses.replace(SCALES["cpu"], neumann_steps=9, lcp_subsample=0.5)
    ref = build_model(s, "crbp:20:spectral:k0").refiner
    assert (ref.lcp_kind, ref.neumann_steps, ref.lcp_subsample) == ("spectral", 0, 0.5)
    ref = build_model(s, "crbp:6:crop8:k3").refiner
    assert (ref.lcp_kind, ref.neumann_steps, ref.lcp_crop, ref.steps) == ("colsum", 3, 8, 6)
    assert build_model(s, "bptt:6").refiner.neumann_steps == 9  # the settings' default


def test_readout_shape_and_trajectory_matches_eval_forward():
    image, _ = _batch(3)
    net = PathfinderNet(**SMALL, mode="crbp", steps=4).eval()
    with torch.no_grad():
        logits = net(image)
    assert logits.shape == (3, 1, 24, 24)
    traj = list(net.trajectory(image, 8))
    assert [t for t, _, _ in traj] == list(range(1, 9))
    torch.testing.assert_close(traj[3][1], logits)
    net.refiner.test_steps = 7
    with torch.no_grad():
        torch.testing.assert_close(traj[6][1], net(image))


@pytest.mark.parametrize("mode", MODES)
def test_training_step_runs_for_every_mode(mode):
    torch.manual_seed(0)
    image, mask = _batch(2)
    net = PathfinderNet(**SMALL, mode=mode, steps=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.cell.w_exc.weight.detach().clone()
    loss = segmentation_loss(net(image), mask) + net.lcp
    assert torch.isfinite(loss)
    assert net.lcp.requires_grad == (mode in ("cbptt", "crbp"))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.cell.w_exc.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, net.cell.w_exc.weight)


def test_loss_prefers_the_right_mask_for_every_kind():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:4, 2:6] = 1
    good, bad = (target * 2 - 1) * 6, -(target * 2 - 1) * 6
    for kind in ("bce_dice", "focal", "wbce"):
        lg, lb = segmentation_loss(good, target, kind), segmentation_loss(bad, target, kind)
        assert lg.dim() == 0 and 0 <= lg < lb, kind
    # Sparse target, all-background guess: weighted BCE counts the missed positives more.
    flat = torch.full_like(target, -3.0)
    assert segmentation_loss(
        flat, target, "wbce"
    ) > torch.nn.functional.binary_cross_entropy_with_logits(flat, target)
    with pytest.raises(ValueError, match="kind"):
        segmentation_loss(good, target, "dice")
    with pytest.raises(ValueError, match="shape"):
        segmentation_loss(good[:, :, :4], target)


def test_iou_f1():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, :2] = 1
    logits = -torch.ones(2, 1, 4, 4)
    logits[0, 0, 0, :4] = 1  # 2 hits, 2 false positives
    iou, f1 = iou_f1(logits, target)
    torch.testing.assert_close(iou, torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(f1, torch.tensor([2 / 3, 1.0], dtype=torch.float64))


def test_saved_memory_grows_with_bptt_steps_but_not_crbp():
    s = dataclasses.replace(SCALES["cpu"], size=24, channels=6, kernel_size=3, gabor_size=5)
    image, mask = _batch(2)
    mem = {
        (m, t): saved_tensor_bytes(build_model(s, f"{m}:{t}"), s, image, mask)
        for m in ("bptt", "crbp")
        for t in (2, 6)
    }
    assert mem["bptt", 6] > 2 * mem["bptt", 2]
    assert mem["crbp", 6] == mem["crbp", 2]
    assert mem["crbp", 6] < mem["bptt", 6]


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_blob_channels_make_the_dot_stand_out_from_the_lines(scale):
    s = SCALES[scale]
    front = GaborEnergy(s.channels, s.gabor_size, line_width=s.thickness, dot_radius=s.dot_radius)
    blobs = slice(2 * ((s.channels - 1) // 2), s.channels)
    cfg = dataclasses.replace(s, size=min(s.size, 64), path_length=4).generator_config()
    ds = PathfinderDataset(cfg, 4, seed=3)
    for i in range(len(ds)):
        smp = ds.sample(i)
        x = front(torch.from_numpy(smp.image)[None, None])[0, blobs]
        cx, cy = (int(round(v)) for v in smp.dot)
        far = torch.from_numpy(smp.image >= 0.5)
        yy, xx = torch.meshgrid(torch.arange(cfg.size), torch.arange(cfg.size), indexing="ij")
        far &= torch.hypot((xx - cx).float(), (yy - cy).float()) > s.dot_radius + 3
        at_dot = x[:, cy - 1 : cy + 2, cx - 1 : cx + 2].amax(dim=(1, 2))
        assert torch.all(at_dot > 1.5 * x[:, far].amax(dim=1)), (i, at_dot, x[:, far].amax(dim=1))
        assert torch.all(at_dot < 1.01)  # scaled on the dot: its squared response peaks at 1
