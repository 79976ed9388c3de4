"""The phantom is written in the MSD layout and read back by the real NIfTI converter."""
import json

import nibabel as nib
import numpy as np
import pytest

from medseg.datasets.msd import list_cases, read_case
from medseg.errors import MedsegError
from tests.conftest import REALDATA

CFG = {"window_level": -600, "window_width": 1500}


@pytest.fixture(scope="module")
def phantom(make_phantom):
    return make_phantom("msd", cases=6, depth=16, size=48, seed=3)


def test_layout_and_dataset_json(phantom):
    meta = json.loads((phantom / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"} and meta["numTraining"] == 6
    cases = list_cases(phantom)
    assert [c.case_id for c in cases] == [f"phantom_{i:03d}" for i in range(6)]
    img = nib.load(cases[0].image)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # stored like DICOM-derived CT
    assert img.get_data_dtype() == np.int16


def test_deterministic_by_seed(tmp_path, make_phantom):
    make_phantom("msd", tmp_path / "a", cases=3, depth=8, size=32, seed=7)
    make_phantom("msd", tmp_path / "b", cases=3, depth=8, size=32, seed=7)
    for name in ("imagesTr/phantom_002.nii.gz", "labelsTr/phantom_002.nii.gz"):
        a = np.asarray(nib.load(tmp_path / "a" / name).dataobj)
        b = np.asarray(nib.load(tmp_path / "b" / name).dataobj)
        assert np.array_equal(a, b)


def test_slices_upright_and_labels_aligned(phantom):
    slices = [s for c in list_cases(phantom) for s in read_case(c, CFG)]
    mid = slices[8]
    h, w = mid.mask.shape
    column = mid.image[:, w // 2, 0]
    spine_row = int(np.argmax(column))  # bone is the brightest tissue: posterior, bottom half
    assert spine_row > h // 2
    lesion = np.concatenate([s.image[..., 0][s.mask] for s in slices])
    lung = np.concatenate([s.image[..., 0][(s.image[..., 0] < 0.25) & (s.image[..., 0] > 0.1)] for s in slices])
    assert lesion.size > 0 and lesion.mean() > lung.mean() + 0.3  # label sits on bright tumour
    positives = sum(s.mask.any() for s in slices)
    assert 0 < positives < len(slices) / 2  # most slices are lesion-free
    assert mid.spacing[2] == pytest.approx(2.5)


def test_missing_label_is_reported(phantom, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(phantom, copy)
    (copy / "labelsTr" / "phantom_001.nii.gz").unlink()
    (copy / "imagesTr" / "._phantom_000.nii.gz").write_bytes(b"mac")
    with pytest.raises(MedsegError, match=r"phantom_001\.nii\.gz: no label file"):
        list_cases(copy)


BRATS = REALDATA / "msd" / "Task98_BraTS2021Edema"


@pytest.mark.skipif(not BRATS.exists(), reason="../shared/realdata not present")
def test_real_brats_volume_in_msd_layout():
    cases = list_cases(BRATS.parent)
    assert [c.case_id for c in cases] == ["BraTS2021_01646"]
    slices = list(read_case(cases[0], CFG))
    assert len(slices) == 104 and slices[0].image.shape == (160, 160, 1)
    label = nib.as_closest_canonical(nib.load(cases[0].label)).get_fdata() > 0
    assert sum(int(s.mask.sum()) for s in slices) == int(label.sum())
    big = max(slices, key=lambda s: s.mask.sum())
    image = big.image[..., 0]
    # MR (no dataset.json, no HU air) -> percentile normalisation; edema is bright on FLAIR
    assert image.max() == pytest.approx(1.0) and image.min() == 0.0
    brain = image > 0.05
    assert image[big.mask].mean() > image[brain & ~big.mask].mean() + 0.1
    # upright axial slice: the head is longer front-to-back (rows) than side-to-side (columns)
    rows, cols = np.nonzero(brain)
    assert np.ptp(rows) > 1.1 * np.ptp(cols)
