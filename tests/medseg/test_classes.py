"""Classes in params: exclusive label maps and overlapping regions, their codes, their decisions,
and their losses; one class is the binary pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.classes import BINARY, from_json, from_params
from medseg.errors import MedsegError
from medseg.losses import build_loss, region_targets

BRATS = {"whole_tumour": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}
LABEL = np.array([[0, 1, 2], [3, 4, 0]])
from medseg.losses import LossParams
from tests.conftest import shipped


def test_exclusive_codes_are_class_indices_and_masks_one_per_class():
    classes = from_params({"edema": [2], "core": [1, 3], "enhancing": [4]}, "exclusive")
    assert classes.channels == 4 and classes.names == ("edema", "core", "enhancing")
    codes = classes.encode(LABEL)
    assert codes.tolist() == [[0, 2, 1], [2, 3, 0]]
    masks = classes.masks_of(codes[None])[0]
    assert masks.shape == (3, 2, 3)
    assert masks[0].tolist() == [[False, False, True], [False, False, False]]  # edema: value 2 only
    assert (masks.sum(axis=0) <= 1).all()  # exclusive: at most one class a pixel


def test_regions_overlap_as_bits():
    classes = from_params(BRATS, "regions")
    assert classes.channels == 3
    codes = classes.encode(LABEL)
    # value 4 is in all three regions: bits 0, 1 and 2; value 2 only in the whole tumour
    assert codes.tolist() == [[0, 3, 1], [3, 7, 0]]
    masks = classes.masks_of(codes[None])[0]
    assert masks.sum(axis=(1, 2)).tolist() == [4, 3, 1]
    assert from_json(classes.as_json(), "x") == classes


def test_decide_argmax_or_thresholds_per_region():
    exclusive = from_params({"a": [1], "b": [2]})
    probs = np.zeros((1, 3, 1, 2), np.float32)
    probs[0, :, 0, 0] = [0.2, 0.5, 0.3]  # class a wins
    probs[0, :, 0, 1] = [0.6, 0.1, 0.3]  # background wins
    assert exclusive.decide(probs)[0, :, 0].tolist() == [[True, False], [False, False]]
    regions = from_params({"a": [1], "b": [1, 2]}, "regions")
    p = np.array([[[[0.4]], [[0.4]]]], np.float32)
    assert regions.decide(p, [0.3, 0.5])[0, :, 0, 0].tolist() == [True, False]


def test_one_class_is_the_binary_pipeline_and_bad_specs_name_the_key():
    assert from_params({"tumour": [1, 2]}) is BINARY
    assert from_params(None) is BINARY
    for spec, match in (({"a": [1], "b": [1]}, "label value 1 is in both a and b"),
                        ({"a": [], "b": [2]}, r"dataset\.classes\.a"),
                        ({"a": [0], "b": [2]}, r"dataset\.classes\.a"),
                        ({"1a": [1], "b": [2]}, r"dataset\.classes\.1a"),
                        ({"background": [1], "b": [2]}, r"dataset\.classes\.background"),
                        ([1, 2], "must map class names")):
        with pytest.raises(MedsegError, match=match):
            from_params(spec, "exclusive")
    with pytest.raises(MedsegError, match="dataset.labels and dataset.classes"):
        from_params({"a": [1], "b": [2]}, labels=[1])
    with pytest.raises(MedsegError, match="at most 8"):
        from_params({f"r{i}": [i + 1] for i in range(9)}, "regions")


def test_losses_fall_for_the_true_answer_in_both_modes():
    codes = torch.tensor(from_params(BRATS, "regions").encode(LABEL)).float()[None, None]
    regions = from_params(BRATS, "regions")
    target = region_targets(codes, 3)
    assert target.shape == (1, 3, 2, 3) and target[0, 2].sum() == 1  # enhancing: the one 4
    loss = build_loss(shipped(LossParams, type="dice_bce"), regions)
    right, wrong = (target * 20 - 10), (10 - target * 20)
    assert loss(right, codes) < 0.1 < loss(wrong, codes)
    exclusive = from_params({"edema": [2], "core": [1, 3], "enhancing": [4]})
    codes = torch.tensor(exclusive.encode(LABEL)).float()[None, None]
    onehot = torch.nn.functional.one_hot(codes[:, 0].long(), 4).permute(0, 3, 1, 2).float()
    loss = build_loss(shipped(LossParams, type="dice_bce"), exclusive)
    assert loss(onehot * 20, codes) < 0.1 < loss((1 - onehot) * 20, codes)
    with pytest.raises(MedsegError, match=r"loss\.type='focal' takes one foreground"):
        build_loss(shipped(LossParams, type="focal", focal_gamma=2.0), exclusive)
