"""Bad input, second round (issue 18), families 4, 5 and 7 through the real `convert`: NIfTI image
and label that disagree, NaN and inf voxels, masks with colour, and the temp folders of a killed run.
Refusals keep test_bad_inputs.py's contract (exit 2, one `error:` line naming the file, no traceback,
the working folder as it was); accepted inputs must give the slices the clean phantom gives.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from tests.conftest import stage
from tests.stages.conftest import convert_ok, converted, dead_pid, raw_workdir
from tests.stages.test_bad_inputs import (ISIC_TRUTH, LGG_PATIENT, assert_refused, put_old_outputs,
                                          refused_and_untouched, tree, truncate)


def workdir(tmp_path: Path, stage_phantoms, name: str) -> tuple[Path, Path]:
    work, raw = raw_workdir(tmp_path, stage_phantoms(name), name)
    put_old_outputs(work)
    return work, raw


def rel(raw: Path, path: Path) -> str:
    return str(path.relative_to(raw.parents[2]))


# ---------------------------------------------------------------- (4) NIfTI image and label must agree


def _edit_label(edit: Callable[[nib.Nifti1Image], nib.Nifti1Image]) -> Callable[[Path], str]:
    def damage(raw: Path) -> str:
        path = raw / "labelsTr/phantom_001.nii.gz"
        nib.save(edit(nib.load(path)), path)
        return f"{rel(raw, path)}: "
    return damage


def _affine(change: Callable[[np.ndarray], None]) -> Callable[[nib.Nifti1Image], nib.Nifti1Image]:
    def edit(img: nib.Nifti1Image) -> nib.Nifti1Image:
        affine = img.affine.copy()
        change(affine)
        return nib.Nifti1Image(np.asarray(img.dataobj), affine)
    return edit


def _flip_xy(affine: np.ndarray) -> None:
    affine[:, :2] *= -1  # LPS -> RAS, the voxels as they were: the label turned 180 degrees in the plane


def _shift_origin(affine: np.ndarray) -> None:
    affine[0, 3] += 2 * abs(affine[0, 0])  # two voxels along x


def _thicker_slices(affine: np.ndarray) -> None:
    affine[2, 2] *= 1.5


def _nan_label(img: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj).astype(np.float32)
    data[1, 1, 1] = np.nan
    return nib.Nifti1Image(data, img.affine)


def _image_replaced(write: Callable[[Path], None], needle: str) -> Callable[[Path], str]:
    def damage(raw: Path) -> str:
        path = raw / "imagesTr/phantom_002.nii.gz"
        write(path)
        return f"{rel(raw, path)}: {needle}"
    return damage


def _png_bytes(path: Path) -> None:
    path.write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())


def _all_nan(path: Path) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), path)


def _flat(path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), nib.load(path).affine), path)


MISMATCHED_NIFTI = {
    # before: converted with exit 0, the masks turned 180 degrees against the images
    "label_affine_flipped": (_edit_label(_affine(_flip_xy)),
                             ("orientation RAS differs from its image's LPS", "imagesTr/phantom_001.nii.gz",
                              "image and label must share one voxel grid")),
    "label_origin_shifted": (_edit_label(_affine(_shift_origin)), ("affine places voxels up to", "origin")),  # before: ignored
    "label_spacing": (_edit_label(_affine(_thicker_slices)), ("voxel size", "differs from its image's")),
    "label_other_shape": (_edit_label(lambda img: nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine)),
                          ("differs from its image", "imagesTr/phantom_001.nii.gz")),
    "label_4d": (_edit_label(lambda img: nib.Nifti1Image(np.stack([np.asarray(img.dataobj)] * 2, -1), img.affine)),
                 ("a label is one volume of the image's size",)),
    "label_nan": (_edit_label(_nan_label), ("1 label voxels are NaN or inf",)),
    "png_named_nii_gz": (_image_replaced(_png_bytes, "cannot read NIfTI"), ()),
    "all_nan_image": (_image_replaced(_all_nan, "no finite pixel value"), ()),
    "2d_image": (_image_replaced(_flat, "expected a 3D volume"), ()),
}


@pytest.mark.parametrize("case", list(MISMATCHED_NIFTI))
def test_nifti_image_and_label_that_disagree_are_refused(tmp_path, stage_phantoms, case):
    damage, needles = MISMATCHED_NIFTI[case]
    work, raw = workdir(tmp_path, stage_phantoms, "phantom")
    refused_and_untouched(work, "stages.convert", damage(raw), *needles)


def _label_extra_axis(raw: Path) -> None:
    path = raw / "labelsTr/phantom_001.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine), path)


def _label_stored_flipped(raw: Path) -> None:
    """Voxels and affine flipped together: the same label on the same grid, stored the other way."""
    path = raw / "labelsTr/phantom_001.nii.gz"
    img = nib.load(path)
    flip = nib.orientations.axcodes2ornt(("R", "A", "S"))
    nib.save(img.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), flip)), path)


@pytest.mark.parametrize("damage", [_label_extra_axis, _label_stored_flipped], ids=["extra_axis", "stored_flipped"])
def test_label_on_the_image_grid_converts_as_the_clean_one(tmp_path, stage_phantoms, clean, damage):
    """Before: a label of X x Y x Z x 1 ended in a traceback."""
    work, raw = workdir(tmp_path, stage_phantoms, "phantom")
    damage(raw)
    convert_ok(work)
    manifest, _, masks = converted(work)
    ref_manifest, _, ref_masks = clean("phantom")
    assert manifest["fg_pixels"].tolist() == ref_manifest["fg_pixels"].tolist()
    assert all(np.array_equal(masks[s], ref_masks[s]) for s in masks)


def _mr(raw: Path) -> None:
    """The phantom as an MR task (intensity from the non-zero voxels' percentiles), float32 voxels."""
    meta = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**meta, "modality": {"0": "MR"}}))
    for path in (raw / "imagesTr").glob("*.nii.gz"):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine), path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_one_non_finite_voxel_never_turns_a_case_black(tmp_path, stage_phantoms, clean, value):
    """Before: one NaN voxel in an MR volume made every slice of its case black, exit 0."""
    work, raw = workdir(tmp_path, stage_phantoms, "phantom")
    _mr(raw)
    path = raw / "imagesTr/phantom_000.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)
    data[3, 3, 1] = value
    nib.save(nib.Nifti1Image(data, img.affine), path)
    result = convert_ok(work)
    manifest, images, _ = converted(work)
    _, ref_images, _ = clean("phantom", _mr)
    case = [s for s in manifest["slice_id"] if s.startswith("phantom_000")]
    assert case and all(images[s].max() > 0 for s in case)
    for s in case:  # as without that voxel, up to the percentiles moving by one voxel
        diff = np.abs(images[s].astype(int) - ref_images[s].astype(int))
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2, s
    assert "phantom_000.nii.gz: 1 of" in result.stderr and "NaN or inf" in result.stderr  # said, not silent


# ---------------------------------------------------------------- (5) masks with colour


COLOUR_MASKS = {
    "isic_red_on_black": ("phantom_isic", f"{ISIC_TRUTH}/ISIC_0000001_segmentation.png", (0, 0, 255)),
    "isic_white_rgb": ("phantom_isic", f"{ISIC_TRUTH}/ISIC_0000002_segmentation.png", (255, 255, 255)),
    "isic_opaque_rgba": ("phantom_isic", f"{ISIC_TRUTH}/ISIC_0000000_segmentation.png", (0, 255, 0, 255)),
    "lgg_green_tif": ("phantom_lgg", f"{LGG_PATIENT}/TCGA_PH_0002_20000101_2_mask.tif", (0, 255, 0)),
}


@pytest.mark.parametrize("case", list(COLOUR_MASKS))
def test_colour_mask_counts_any_channel(tmp_path, stage_phantoms, clean, case):
    """Before: only opencv's first (blue) channel was read, so a red lesion on black read as empty."""
    dataset, mask_rel, colour = COLOUR_MASKS[case]
    work, raw = workdir(tmp_path, stage_phantoms, dataset)
    path = raw / mask_rel
    grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    coloured = np.zeros((*grey.shape[:2], len(colour)), np.uint8)
    coloured[..., 3:] = 255  # an alpha channel, if any, opaque
    coloured[grey > 0] = colour
    assert cv2.imwrite(str(path), coloured)
    convert_ok(work)
    manifest, _, masks = converted(work)
    ref_manifest, _, ref_masks = clean(dataset)
    assert manifest["fg_pixels"].tolist() == ref_manifest["fg_pixels"].tolist() and manifest["fg_pixels"].sum() > 0
    assert all(np.array_equal(masks[s], ref_masks[s]) for s in masks)


def _transparent(grey: np.ndarray) -> np.ndarray:
    bgra = np.zeros((*grey.shape, 4), np.uint8)
    bgra[..., 3] = grey  # the lesion drawn as opacity
    return bgra


def _grey_edge(grey: np.ndarray) -> np.ndarray:
    bgr = np.zeros((*grey.shape, 3), np.uint8)
    bgr[grey > 0] = (0, 0, 255)
    bgr[:2, :, 2] = 128  # an anti-aliased edge, in the red channel only
    return bgr


@pytest.mark.parametrize("paint, needle", [(_transparent, "mask has a varying alpha channel"),
                                           (_grey_edge, "mask values 0, 128, 255 are not binary")],
                         ids=["alpha", "grey_edge_in_one_channel"])
def test_colour_mask_that_is_not_binary_is_refused(tmp_path, stage_phantoms, paint, needle):
    work, raw = workdir(tmp_path, stage_phantoms, "phantom_isic")
    path = raw / ISIC_TRUTH / "ISIC_0000001_segmentation.png"
    assert cv2.imwrite(str(path), paint(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))
    refused_and_untouched(work, "stages.convert", f"{rel(raw, path)}: {needle}")


# ---------------------------------------------------------------- (7) the temp folders of a killed run


def test_leftovers_of_a_killed_convert_are_removed(tmp_path, stage_phantoms):
    work, _ = workdir(tmp_path, stage_phantoms, "phantom")
    dead, alive = dead_pid(), os.getpid()  # alive: a temp folder another running process uses, left alone
    (work / f"data/.slices.tmp-{dead}/images").mkdir(parents=True)
    (work / f"data/.slices.tmp-{dead}/images/half.png").write_bytes(b"half")
    (work / f"data/.slices.old-{dead}").mkdir()  # data/slices is in place: this copy is the stale one
    (work / f"results/convert/.metrics.json.tmp-{dead}").write_text("{half")
    (work / f"data/.slices.tmp-{alive}").mkdir()
    convert_ok(work)
    assert sorted(p.name for p in (work / "data").iterdir()) == sorted(["raw", "slices", f".slices.tmp-{alive}"])
    assert sorted(p.name for p in (work / "results/convert").iterdir()) == ["metrics.json", "skipped.csv"]


def test_output_lost_between_two_renames_is_put_back_by_the_next_run(tmp_path, stage_phantoms):
    """Where the atomic swap is unavailable, a kill between its two renames leaves data/slices beside
    its place (.slices.old-<pid>); the next run puts it back first, so even a run that then fails
    leaves the old slices in place."""
    work, raw = workdir(tmp_path, stage_phantoms, "phantom")
    before = tree(work / "data/slices")
    dead = dead_pid()
    (work / "data/slices").rename(work / f"data/.slices.old-{dead}")
    (work / f"data/.slices.tmp-{dead}").mkdir()
    truncate(raw / "imagesTr/phantom_001.nii.gz")
    assert_refused(stage(work, "stages.convert"), "phantom_001.nii.gz: cannot read NIfTI")
    assert tree(work / "data/slices") == before
    assert sorted(p.name for p in (work / "data").iterdir()) == ["raw", "slices"]


# ---------------------------------------------------------------- dataset.labels against the data (issue 27)


def test_dataset_labels_that_match_no_label_value(tmp_path, stage_phantoms, clean):
    """The phantom's labels hold 1 only: [7] would make every mask empty (refused); [1, 7] is 1 alone (warned)."""
    for name in ("none", "some"):
        (tmp_path / name).mkdir()
    work, _ = raw_workdir(tmp_path / "none", stage_phantoms("phantom"), "phantom", {"dataset.labels": [7]})
    put_old_outputs(work)
    refused_and_untouched(work, "stages.convert",
                          "params.yaml: dataset.labels=[7] matches no label value of the data (its labels hold 1)")
    work, _ = raw_workdir(tmp_path / "some", stage_phantoms("phantom"), "phantom", {"dataset.labels": [1, 7]})
    result = convert_ok(work)
    assert "dataset.labels value(s) 7 occur in no label of the data (it holds 1); the foreground is 1 alone" in \
        result.stderr
    manifest, _, masks = converted(work)
    ref_manifest, _, ref_masks = clean("phantom")
    assert manifest["fg_pixels"].tolist() == ref_manifest["fg_pixels"].tolist()
