"""Augmentation draws depend on the epoch seed and the item, not on the DataLoader's worker count."""
import numpy as np
import torch

from medseg.augment import build_augmentation
from medseg.distributed import DistInfo
from medseg.params import AugmentParams, TrainParams
from medseg.torchdata import SliceDataset, item_seed
from medseg.training import make_loader
from tests.conftest import shipped


def epoch_batches(workers: int, seed: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 1), dtype=np.uint8)
    masks = (rng.random((24, 32, 32)) > 0.7).astype(np.uint8)
    augment = shipped(AugmentParams, hflip=0.5, vflip=0.5, affine=0.5, brightness_contrast=0.5, noise=0.5,
                      coarse_dropout=0.5)
    dataset = SliceDataset(images, masks, np.arange(24), build_augmentation(augment, seed))
    cfg = shipped(TrainParams, batch_size=4, workers=workers, seed=0)
    return list(make_loader(dataset, cfg, 0, seed, torch.device("cpu"), DistInfo()))


def test_workers_0_2_and_4_give_byte_identical_batches():
    reference = epoch_batches(0)
    assert len(reference) == 6
    for workers in (2, 4):
        batches = epoch_batches(workers)
        assert all(torch.equal(x, bx) and torch.equal(y, by) for (x, y), (bx, by) in zip(reference, batches))
    # consecutive batches are not repeats of each other (what forked workers sharing one state gave)
    assert not any(torch.equal(reference[k][0], reference[k + 1][0]) for k in range(len(reference) - 1))


def test_the_draws_follow_the_epoch_seed_and_the_item():
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(epoch_batches(0, seed=7), epoch_batches(0, seed=8)))
    assert item_seed(7, 3) == item_seed(7, 3) and len({item_seed(7, i) for i in range(100)}) == 100
    assert item_seed(None, 3) is None
