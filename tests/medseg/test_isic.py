"""The ISIC phantom is written in the ISIC 2018 Task 1 layout and read back by the real ISIC reader;
the reader is also checked against five real dermoscopy pairs in ../shared/realdata."""
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from medseg.datasets.isic import CHANNELS, EXPECTED, count_summary, list_cases, read_case
from medseg.errors import MedsegError
from tests.conftest import REALDATA, reader

REAL = REALDATA / "isic"
real_only = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata/isic is absent")
INPUT, TRUTH = "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"
SIZE = 40


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom("isic", cases=8, depth=99, size=SIZE, seed=3)


def _copy(phantom: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(phantom, copy)
    return copy


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_layout_sizes_and_masks_on_disk(phantom):
    images = sorted((phantom / INPUT).iterdir())
    assert [p.name for p in images] == [f"ISIC_{i:07d}.jpg" for i in range(8)]
    shapes = set()
    for image in images:
        array = cv2.imread(str(image))
        mask = cv2.imread(str(phantom / TRUTH / f"{image.stem}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == array.shape[:2] and set(np.unique(mask)) == {0, 255}  # a lesion in every image
        h, w = mask.shape
        assert SIZE <= h < w <= 1.5 * SIZE + 1
        shapes.add((h, w))
    assert len(shapes) > 3


def test_deterministic_by_seed(tmp_path, make_phantom):
    make_phantom("isic", tmp_path / "a", cases=3, depth=0, size=32, seed=7)
    make_phantom("isic", tmp_path / "b", cases=3, depth=0, size=32, seed=7)
    for name in (f"{INPUT}/ISIC_0000002.jpg", f"{TRUTH}/ISIC_0000002_segmentation.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cases_paired_by_id(phantom, tmp_path):
    """Clutter that would shift a pairing by sorted position (LICENSE, ._ files) changes nothing."""
    copy = _copy(phantom, tmp_path)
    (copy / TRUTH / "ATTRIBUTION.txt").write_text("x")
    (copy / TRUTH / "._ISIC_0000000_segmentation.png").write_bytes(b"mac")
    (copy / INPUT / "LICENSE.txt").write_text("x")
    cases = list_cases(copy)
    assert count_summary(cases) == {"images": 8} and count_summary(cases).keys() == EXPECTED.keys()
    for case in cases:
        assert case.case_id == case.group == case.image.stem
        assert case.label.name == f"{case.case_id}_segmentation.png"


def test_slices_rgb_and_lesion_aligned(phantom):
    for case in list_cases(phantom):
        (sl,) = read_case(case, reader())
        assert sl.index == 0 and sl.spacing is None
        assert sl.image.shape[2] == CHANNELS and sl.image.dtype == np.float32 and sl.image.max() <= 1.0
        assert sl.mask.shape == sl.image.shape[:2] and sl.mask.dtype == bool
        skin = sl.image[~sl.mask].mean(0)
        assert skin[0] > skin[1] > skin[2]  # skin is red > green > blue: RGB, not cv2's BGR
        assert sl.image[sl.mask].mean() < sl.image[~sl.mask].mean() - 0.1  # mask sits on the dark lesion


def test_nested_root_and_validation_with_truth(tmp_path, make_phantom):
    root = tmp_path / "raw" / "isic2018" / "data"
    make_phantom("isic", root, cases=3, depth=0, size=24, seed=1)
    assert [c.case_id for c in list_cases(tmp_path / "raw")] == [f"ISIC_{i:07d}" for i in range(3)]
    val_in, val_truth = root / "ISIC2018_Task1-2_Validation_Input", root / "ISIC2018_Task1_Validation_GroundTruth"
    val_in.mkdir()
    shutil.copy(root / INPUT / "ISIC_0000001.jpg", val_in / "ISIC_0000101.jpg")
    assert len(list_cases(tmp_path / "raw")) == 3  # no validation ground truth: training only
    val_truth.mkdir()
    shutil.copy(root / TRUTH / "ISIC_0000001_segmentation.png", val_truth / "ISIC_0000101_segmentation.png")
    cases = list_cases(tmp_path / "raw")
    assert [c.case_id for c in cases][-1] == "ISIC_0000101" and len(cases) == 4


def test_missing_mask_is_reported(phantom, tmp_path):
    copy = _copy(phantom, tmp_path)
    (copy / TRUTH / "ISIC_0000003_segmentation.png").unlink()
    with pytest.raises(MedsegError, match=r"ISIC_0000003\.jpg: no mask file ISIC_0000003_segmentation\.png"):
        list_cases(copy)


def test_orphan_mask_is_reported(phantom, tmp_path):
    copy = _copy(phantom, tmp_path)
    (copy / INPUT / "ISIC_0000005.jpg").unlink()
    with pytest.raises(MedsegError, match=r"ISIC_0000005_segmentation\.png: mask without image"):
        list_cases(copy)


@pytest.mark.parametrize("name", [f"{INPUT}/ISIC_0000002.jpg", f"{TRUTH}/ISIC_0000002_segmentation.png"])
def test_truncated_file_is_reported(phantom, tmp_path, name):
    """A JPEG cut short still decodes in OpenCV (grey rows); the reader must refuse it anyway."""
    copy = _copy(phantom, tmp_path)
    _truncate(copy / name)
    case = next(c for c in list_cases(copy) if c.case_id == "ISIC_0000002")
    with pytest.raises(MedsegError, match=re.escape(f"{Path(name).name}: cannot read image")):
        list(read_case(case, reader()))


def test_mask_of_other_size_is_reported(phantom, tmp_path):
    copy = _copy(phantom, tmp_path)
    mask = copy / TRUTH / "ISIC_0000004_segmentation.png"
    cv2.imwrite(str(mask), np.zeros((7, 9), np.uint8))
    case = next(c for c in list_cases(copy) if c.case_id == "ISIC_0000004")
    with pytest.raises(MedsegError, match=r"ISIC_0000004_segmentation\.png: mask size \(7, 9\) differs"):
        list(read_case(case, reader()))


def test_no_training_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(MedsegError, match=r"no ISIC2018_Task1-2_Training_Input/ folder"):
        list_cases(tmp_path)


@real_only
def test_real_pairs():
    cases = list_cases(REAL)
    assert count_summary(cases) == {"images": 5}
    assert len({c.group for c in cases}) == 5
    for case in cases:
        (sl,) = read_case(case, reader())
        assert sl.mask.shape == sl.image.shape[:2] and sl.mask.dtype == bool and 0 < sl.mask.mean() < 1
        stored = cv2.imread(str(case.label), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(stored)) == {0, 255}
        with Image.open(case.image) as img:
            rgb = np.asarray(img.convert("RGB"), np.float32) / 255.0
        assert np.abs(sl.image - rgb).mean() < 0.01  # same channel order as PIL (decoders may differ by 1)
