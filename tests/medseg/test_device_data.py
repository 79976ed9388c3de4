"""The device data path: each augment family applied with its params probability, as the albumentations
path applies it; masks binary and aligned with their images; draws fixed by the seeds; each rank its share."""
import numpy as np
import pytest
import torch

from medseg.augment import build_augmentation
from medseg.device_data import DeviceAugment, DeviceFeed, uses_device_path
from medseg.distributed import DistInfo
from medseg.errors import MedsegError
from medseg.params import AugmentParams, TrainParams
from medseg.training import TrainData
from tests.conftest import no_augment, shipped

FAMILIES = ("hflip", "vflip", "affine", "brightness_contrast", "noise", "coarse_dropout")
CPU = torch.device("cpu")


def random_slices(n: int, size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 255, (n, size, size, 1), dtype=np.uint8)
    masks = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
    return images, masks


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_the_share_of_items_its_probability_says_on_both_paths(family):
    p, n = 0.3, 1500
    augment = no_augment().with_values(**{family: p})
    images, masks = random_slices(n)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2)).float() / 255
    device = DeviceAugment(augment)
    out, _ = device(x, torch.from_numpy(masks[:, None]).float(), torch.Generator().manual_seed(0))
    changed_device = (out != x).flatten(1).any(1).float().mean().item()
    compose = build_augmentation(augment, 0)
    changed_loader = np.mean([not np.array_equal(compose(image=im, mask=m)["image"], im)
                              for im, m in zip(images, masks)])
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(device.applied[family].float().mean().item() - p) < 4 * sigma
    assert abs(changed_device - p) < 4 * sigma and abs(changed_loader - p) < 4 * sigma, (changed_device, changed_loader)


def test_geometric_families_keep_masks_binary_and_on_their_images():
    images, masks = random_slices(64, size=32)
    images = (masks[..., None] * 200 + 30).astype(np.uint8)  # the image shows the mask: alignment is checkable
    augment = no_augment().with_values(hflip=0.5, vflip=0.5, affine=1.0)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2)).float() / 255
    out_x, out_y = DeviceAugment(augment)(x, torch.from_numpy(masks[:, None]).float(), torch.Generator().manual_seed(1))
    assert set(out_y.unique().tolist()) <= {0.0, 1.0}
    inside = out_x > 0.05  # zeros only where the affine brought in the border
    agree = ((out_x > (30 + 100) / 255) == (out_y > 0.5))[inside].float().mean().item()
    assert agree > 0.9, agree  # bilinear image edges against nearest masks: they differ only along boundaries


def feed(augment: AugmentParams, n: int = 40) -> DeviceFeed:
    images, masks = random_slices(n)
    repeats = np.where(np.arange(n) % 4 == 0, 2, 1)  # some slices drawn twice
    return DeviceFeed(TrainData(images, masks, repeats, images[:1], masks[:1]), augment, 8, CPU)


def test_batches_follow_the_seeds_and_nothing_else():
    augment = shipped(AugmentParams)
    a, b, c = feed(augment), feed(augment), feed(augment)
    a.set_epoch(0, 11, 12)
    b.set_epoch(0, 11, 12)
    c.set_epoch(0, 11, 13)
    first, again, other = list(a), list(b), list(c)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, other))  # another augmentation seed


def test_without_augmentation_each_epoch_draws_every_position_once_images_with_their_masks():
    data = feed(no_augment())
    data.set_epoch(0, 5, 5)
    batches = list(data)
    assert len(batches) == len(data) == 50 // 8 and all(len(x) == 8 for x, _ in batches)  # 50 draws, the last 2 dropped
    images = data.images.float() / 255
    for x, y in batches:
        picked = [int((images == item).flatten(1).all(1).nonzero()[0]) for item in x]
        assert torch.equal(y, data.masks[picked].float())
    counts = torch.bincount(torch.cat([(images[:, None] == x[None]).flatten(2).all(2).nonzero()[:, 0]
                                       for x, _ in batches]), minlength=40)
    assert counts.max() <= 2 and counts.sum() == 48


def test_ranks_take_disjoint_shares_of_one_order():
    images, masks = random_slices(40)
    seen = []
    for rank in (0, 1):
        data = DeviceFeed(TrainData(images, masks, np.ones(40, np.int64), images[:1], masks[:1]), no_augment(), 8, CPU,
                          DistInfo(rank=rank, local_rank=rank, world_size=2))
        data.set_epoch(0, 3, 3)
        held = data.images.float() / 255
        seen.append({int((held == item).flatten(1).all(1).nonzero()[0]) for x, _ in data for item in x})
        assert len(data) == 2  # 20 draws each, in batches of 8, the last 4 dropped
    assert len(seen[0]) == len(seen[1]) == 16 and not seen[0] & seen[1]


def test_auto_takes_the_device_path_on_cuda_unless_a_family_has_no_device_version():
    cfg, augment = shipped(TrainParams, data_path="auto"), shipped(AugmentParams, elastic=0.0, grid_distortion=0.0)
    assert uses_device_path(cfg, augment, torch.device("cuda")) and not uses_device_path(cfg, augment, CPU)
    assert not uses_device_path(cfg, augment.with_values(elastic=0.2), torch.device("cuda"))
    assert uses_device_path(cfg.with_values(data_path="device"), augment, CPU)
    with pytest.raises(MedsegError, match="augment.grid_distortion have no device version"):
        uses_device_path(cfg.with_values(data_path="device"), augment.with_values(grid_distortion=0.1), CPU)
