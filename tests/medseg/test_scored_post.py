"""The post-processing record evaluate writes and predict/export apply: checked value by value, tied to
the checkpoints it was chosen for, and applied with pixel counts scaled to a source image's own size."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.scored_post import (Applied, apply_slices, check_belongs, check_record, checkpoint_digests, make_record,
                                read_record, scaled)

STEPS = {"min_area": 4, "largest_component": False, "min_volume": 0, "largest_volume": False}


def record(tmp_path, steps=None, names=("foreground",)):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    return make_record("unet", [ckpt], 32, Applied(0.4, None, False, {n: dict(steps or STEPS) for n in names}), "the val split")


def test_a_record_round_trips_and_names_its_checkpoints(tmp_path):
    rec = record(tmp_path)
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps(rec))
    back = read_record(path, ["foreground"])
    assert back["steps"]["foreground"] == STEPS and back["threshold"] == 0.4
    assert back["checkpoint_sha256"] == checkpoint_digests([tmp_path / "best.pt"])
    check_belongs(back, "r", checkpoint_digests([tmp_path / "best.pt"]), "unet")


def test_a_record_of_another_training_or_model_is_refused(tmp_path):
    rec = record(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"retrained weights")
    with pytest.raises(MedsegError, match="r: chosen for another training than this unet model"):
        check_belongs(rec, "r", checkpoint_digests([tmp_path / "best.pt"]), "unet")
    with pytest.raises(MedsegError, match="another training than this deeplab model"):
        check_belongs(rec, "r", rec["checkpoint_sha256"], "deeplab")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["steps"]["foreground"].update(min_area=-1), r"steps\.foreground\.min_area=-1 is not a whole number"),
    (lambda r: r["steps"]["foreground"].update(min_area=2.5), r"min_area=2\.5"),
    (lambda r: r["steps"]["foreground"].update(largest_volume="yes"), r"largest_volume='yes' is not true or false"),
    (lambda r: r.update(threshold=1.5), r"threshold\(s\) \[1\.5\]"),
    (lambda r: r.update(size=0), r"size=0 is not a positive integer"),
    (lambda r: r.update(format="x"), r"not a medseg post-processing record"),
    (lambda r: r["steps"].update(lesion=STEPS), r"steps are for \['foreground', 'lesion'\]"),
])
def test_an_edited_record_is_one_line(tmp_path, edit, message):
    rec = record(tmp_path)
    edit(rec)
    with pytest.raises(MedsegError, match=message):
        check_record(rec, "p.json", ["foreground"])


def test_pixel_counts_scale_with_the_source_area():
    assert scaled(10, (64, 64), 32) == 40 and scaled(10, (16, 32), 32) == 5 and scaled(0, (64, 64), 32) == 0


def test_min_area_and_largest_component_per_slice_at_the_source_size():
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 2:4, 2:4] = True  # 4 px
    mask[0, 10:15, 10:15] = True  # 25 px
    mask[0, 30:40, 30:40] = True  # 100 px
    # min_area 4 at 32 px is 16 px at 64 px: the 4-px speck goes, the others stay
    kept = apply_slices(mask, [STEPS], 32, volume=False)
    assert kept.sum() == 125
    largest = apply_slices(mask, [STEPS | {"largest_component": True}], 32, volume=False)
    assert largest.sum() == 100


def test_volume_steps_act_on_the_slices_together_and_per_class():
    masks = np.zeros((4, 2, 16, 16), bool)  # 4 slices, 2 classes
    masks[0:3, 0, 2:6, 2:6] = True  # class 0: a 48-voxel object over three slices
    masks[3, 0, 10:12, 10:12] = True  # and a 4-voxel one
    masks[1, 1, 8:10, 8:10] = True  # class 1: one 4-voxel object, kept by its own steps
    steps = [{"min_area": 0, "largest_component": False, "min_volume": 10, "largest_volume": False},
             {"min_area": 0, "largest_component": False, "min_volume": 0, "largest_volume": False}]
    out = apply_slices(masks, steps, 16, volume=True)
    assert out[:, 0].sum() == 48 and out[:, 1].sum() == 4
    flat = apply_slices(masks, steps, 16, volume=False)  # 2D files one by one: the 3D steps do not apply
    assert (flat == masks).all()
