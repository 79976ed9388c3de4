"""medseg.augment: a missing MR sequence drawn as the LGG set stores one (the other channels replaced by
the fill channel), at its probability, on the albumentations path and on the device path alike; the
fill channel checked against the slices."""
import numpy as np
import pytest
import torch

from medseg.augment import build_augmentation, check_fill_channel
from medseg.device_data import DeviceAugment
from medseg.errors import MedsegError
from medseg.params import AugmentParams
from tests.conftest import no_augment

CHANNEL_VALUES = (10, 120, 240)  # pre-contrast, FLAIR, post-contrast, each one flat value


def three_channel(n: int) -> np.ndarray:
    return np.broadcast_to(np.array(CHANNEL_VALUES, np.uint8), (n, 8, 8, 3)).copy()


def replaced_sets(images: np.ndarray) -> list[tuple[int, ...]]:
    """Per image, the channels that now hold FLAIR's value though they held another."""
    return [tuple(c for c in (0, 2) if im[0, 0, c] == CHANNEL_VALUES[1]) for im in images]


def test_both_paths_replace_a_nonempty_subset_of_the_other_channels_at_the_probability():
    p, n = 0.3, 3000
    augment = no_augment().with_values(missing_channels=p, fill_channel=1)
    images = three_channel(n)
    compose = build_augmentation(augment, 0)
    loader = np.stack([compose(image=im, mask=np.zeros((8, 8), np.uint8))["image"] for im in images])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2)).float()
    out, _ = DeviceAugment(augment)(x, torch.zeros((n, 1, 8, 8)), torch.Generator().manual_seed(0))
    device = out.numpy().transpose(0, 2, 3, 1).round().astype(np.uint8)
    sigma = (p * (1 - p) / n) ** 0.5
    for result in (loader, device):
        assert np.array_equal(result[..., 1], images[..., 1])  # FLAIR itself is never touched
        sets = replaced_sets(result)
        changed = [s for s in sets if s]
        assert abs(len(changed) / n - p) < 4 * sigma
        for subset in ((0,), (2,), (0, 2)):  # pre missing, post missing, both: each about a third
            assert abs(changed.count(subset) / len(changed) - 1 / 3) < 0.06, (subset, changed.count(subset))
        untouched = [im for im, s in zip(result, sets) if not s]
        assert all(np.array_equal(im, images[0]) for im in untouched)


def test_off_by_default_and_the_default_pipeline_draws_as_before():
    shipped = AugmentParams.load()
    assert shipped.missing_channels == 0
    names = [type(t).__name__ for t in build_augmentation(shipped, 0).transforms]
    assert "MissingChannels" not in names  # a probability of 0 adds no transform, so no draw moves


def test_a_fill_channel_beyond_the_slices_is_refused():
    with pytest.raises(MedsegError, match=r"augment.fill_channel=3 but the slices have 3 channel"):
        check_fill_channel(no_augment().with_values(missing_channels=0.1, fill_channel=3), 3)
    check_fill_channel(no_augment().with_values(missing_channels=0.0, fill_channel=3), 3)  # off: nothing to check


def test_a_single_channel_image_has_nothing_to_replace():
    augment = no_augment().with_values(missing_channels=1.0, fill_channel=0)
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    assert np.array_equal(build_augmentation(augment, 0)(image=grey)["image"], grey)
    x = torch.from_numpy(grey.transpose(2, 0, 1)[None]).float()
    assert torch.equal(DeviceAugment(augment)(x, torch.zeros((1, 1, 8, 8)), torch.Generator().manual_seed(0))[0], x)
