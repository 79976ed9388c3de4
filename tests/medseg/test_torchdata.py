"""Augmentation draws depend on the epoch seed and the item, not on the DataLoader's worker count."""
import numpy as np
import torch

from medseg.augment import build_augmentation
from medseg.distributed import DistInfo
from medseg.params import AugmentParams, TrainParams
from medseg.torchdata import EpochOrder, SliceDataset, item_seed
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
    loader = make_loader(dataset, cfg, torch.device("cpu"), DistInfo())
    loader.sampler.set_epoch(0, seed, seed)
    return list(loader)


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


def test_the_run_long_loader_shuffles_as_a_fresh_seeded_loader_did():
    """EpochOrder gives each epoch the order a new DataLoader(shuffle=True) seeded by the epoch seed gave,
    so the one loader per run trains on the batches the committed results were made with."""
    for epoch_seed in (0, 5, 100_003):
        fresh = torch.utils.data.DataLoader(range(37), batch_size=37, shuffle=True,
                                            generator=torch.Generator().manual_seed(epoch_seed))
        order = EpochOrder(37, shuffle_seed=0)
        order.set_epoch(0, epoch_seed, None)
        assert [p for _, p in order] == next(iter(fresh)).tolist()


def test_kept_workers_serve_each_epoch_its_own_draws():
    """Two epochs through one loader whose 2 workers live across them: the batches of 0 workers, and the
    second epoch is not the first again."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)
    masks = (rng.random((16, 16, 16)) > 0.7).astype(np.uint8)
    dataset = SliceDataset(images, masks, np.arange(16), build_augmentation(shipped(AugmentParams, noise=1.0), 0))
    epochs = {}
    for workers in (0, 2):
        loader = make_loader(dataset, shipped(TrainParams, batch_size=4, workers=workers, seed=0),
                             torch.device("cpu"), DistInfo())
        assert loader.persistent_workers == (workers > 0)
        epochs[workers] = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch, 100 + epoch, 7 + epoch)
            epochs[workers].append(torch.cat([x for x, _ in loader]))
    assert all(torch.equal(a, b) for a, b in zip(epochs[0], epochs[2]))
    assert not torch.equal(epochs[2][0], epochs[2][1])
    assert epochs[0][0].dtype == torch.uint8  # a quarter of float32's bytes through the worker queue
