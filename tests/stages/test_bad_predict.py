"""Bad input, second round (issue 18), family 6 through the real `predict`: no output is ever lost
(the source tree mirrored under --out, the extension kept in each mask's name), and an unreadable
input or an --out that cannot be created is one line with --out as it was. The ONNX path names its
masks with the same code (tests/stages/test_export.py runs it on every input kind).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from tests.conftest import make_workdir, stage
from tests.stages.test_bad_inputs import refused_and_untouched


def predict(work: Path, model: Path, source: str, out: str = "out") -> subprocess.CompletedProcess:
    return stage(work, "stages.predict", "--model", str(model), "--source", source, "--out", out)


def png(path: Path, seed: int, shape: tuple[int, ...] = (40, 50)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


@pytest.mark.parametrize("names, masks", [
    (("p1/slice.png", "p2/slice.png"), ("p1/slice_mask.png", "p2/slice_mask.png")),
    (("a.png", "a.jpg"), ("a.png_mask.png", "a.jpg_mask.png")),
    (("x/b.tif", "x/b.png", "b.png", "B.png", "b.dcm.png"),
     ("x/b.tif_mask.png", "x/b.png_mask.png", "b.png_mask.png", "B.png_mask.png", "b.dcm_mask.png"))],
    ids=["same_name_two_folders", "same_stem_two_types", "mixed"])
def test_inputs_with_one_stem_get_a_mask_each(tmp_path, tiny_checkpoint, names, masks):
    """Before: every mask was <stem>_mask.png in one folder, so all inputs of one stem but one were lost;
    now a stem two inputs of one folder share keeps its extension, any other is <stem>_mask.png."""
    work = make_workdir(tmp_path)
    for seed, name in enumerate(names):
        png(work / "in" / name, seed, (40 + 8 * seed, 50))
    upper = work / "in/B.png"
    if upper.exists() and upper.samefile(work / "in/b.png"):
        pytest.skip("a file system that ignores case holds b.png and B.png as one file")
    result = predict(work, tiny_checkpoint, "in")
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(str(p.relative_to(work / "out")) for p in (work / "out").rglob("*_mask.png"))
    assert written == sorted(masks)
    for seed, mask in enumerate(masks):  # each mask has its own input's size: none overwrote another
        assert cv2.imread(str(work / "out" / mask), cv2.IMREAD_UNCHANGED).shape == (40 + 8 * seed, 50)


def test_single_file_source_and_nifti_masks_keep_their_extension(tmp_path, tiny_checkpoint, stage_phantoms):
    work = make_workdir(tmp_path)
    (work / "in").mkdir()
    source = stage_phantoms("phantom") / "imagesTr/phantom_000.nii.gz"
    shutil.copy(source, work / "in/ct.nii.gz")
    nib.save(nib.load(source), work / "in/ct.nii")
    result = predict(work, tiny_checkpoint, "in")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["ct_mask.nii", "ct_mask.nii.gz"]
    for name in ("ct_mask.nii", "ct_mask.nii.gz"):
        out = nib.load(work / "out" / name)
        assert out.shape == nib.load(source).shape and np.allclose(out.affine, nib.load(source).affine)
    result = predict(work, tiny_checkpoint, "in/ct.nii", "single")
    assert result.returncode == 0 and [p.name for p in (work / "single").iterdir()] == ["ct_mask.nii"]


def test_out_inside_the_source_is_not_read_back(tmp_path, tiny_checkpoint):
    work = make_workdir(tmp_path)
    png(work / "in/a.png", 0)
    for _ in range(2):
        result = predict(work, tiny_checkpoint, "in", "in/masks")
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (work / "in/masks").iterdir()) == ["a_mask.png"]


def _png_as(path: Path) -> str:
    path.write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    return "cannot read NIfTI"


def _random_bytes(path: Path) -> str:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return "cannot read NIfTI" if ".nii" in path.name else "cannot read image"


def _flat_nifti(path: Path) -> str:
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), path)
    return "expected a 3D volume"


def _text_as_dicom(path: Path) -> str:
    path.write_bytes(b"not a dicom at all " * 10)
    return "cannot read DICOM"


def _nan_nifti(path: Path) -> str:
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), np.nan, np.float32), np.eye(4)), path)
    return "no finite pixel value"


def _nan_tiff(path: Path) -> str:
    assert cv2.imwrite(str(path), np.full((8, 8), np.nan, np.float32))
    return "no finite pixel value"


@pytest.mark.parametrize("write, name", [(_png_as, "scan.nii.gz"), (_random_bytes, "scan.nii.gz"),
                                         (_flat_nifti, "flat.nii"),
                                         (_text_as_dicom, "x.dcm"), (_nan_nifti, "nan.nii.gz"), (_nan_tiff, "nan.tif")],
                         ids=["png_named_nii_gz", "random_nii_gz", "2d_nifti", "fake_dicom",
                              "all_nan_nifti", "all_nan_tiff"])
def test_unreadable_input_is_one_line_and_out_untouched(tmp_path, tiny_checkpoint, write, name):
    """Before: a file that only pretends to be .nii.gz ended in a traceback."""
    work = make_workdir(tmp_path)
    png(work / "in/a_good.png", 0)
    needle = write(work / "in" / name)
    (work / "out").mkdir()
    (work / "out/keep.txt").write_text("the user's own file")
    refused_and_untouched(work, "stages.predict", f"in/{name}: {needle}",
                          args=("--model", str(tiny_checkpoint), "--source", "in", "--out", "out"))


def test_nan_pixels_are_read_as_background(tmp_path, tiny_checkpoint):
    """A float TIFF with some NaN: a mask comes back (before: the whole input read as 0)."""
    work = make_workdir(tmp_path)
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    image[:3, :3] = np.nan
    (work / "in").mkdir()
    assert cv2.imwrite(str(work / "in/f.tif"), image)
    result = predict(work, tiny_checkpoint, "in")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in/f.tif: 9 of 2000 voxels/pixels are NaN or inf" in result.stderr
    assert cv2.imread(str(work / "out/f_mask.png"), cv2.IMREAD_UNCHANGED).shape == (40, 50)


@pytest.mark.parametrize("out, needle", [("afile/out/masks", "cannot create the output folder ("),
                                         ("/proc/medseg_out", "cannot create the output folder")],
                         ids=["below_a_file", "in_proc"])
def test_out_that_cannot_be_created_is_one_line(tmp_path, tiny_checkpoint, out, needle):
    work = make_workdir(tmp_path)
    png(work / "in/a.png", 0)
    (work / "afile").write_text("a file, not a folder")
    result = refused_and_untouched(work, "stages.predict", needle,
                                   args=("--model", str(tiny_checkpoint), "--source", "in", "--out", out))
    if out.startswith("afile"):
        assert result.stderr.strip().endswith("work/afile is a file)")


def test_a_folder_in_the_way_of_a_mask_is_one_line(tmp_path, tiny_checkpoint):
    work = make_workdir(tmp_path)
    png(work / "in/p1/a.png", 0)
    png(work / "in/p2/a.png", 1)
    (work / "out/p2/a_mask.png").mkdir(parents=True)  # a folder where a mask goes
    refused_and_untouched(work, "stages.predict", "out/p2/a_mask.png: a folder is in the way of p2/a_mask.png",
                          args=("--model", str(tiny_checkpoint), "--source", "in", "--out", "out"))


def test_one_nan_voxel_changes_neither_the_ct_guess_nor_the_model_input(tmp_path, stage_phantoms):
    """Before: a NaN voxel made predict's CT/MR guess MR (np.percentile returned NaN) and the model
    input all zero. predict's NIfTI inputs sit in no Decathlon folder, so the guess is what decides."""
    from medseg.prediction import model_inputs, unit_images
    from tests.tiny_models import PRE

    img = nib.load(stage_phantoms("phantom") / "imagesTr/phantom_000.nii.gz")
    data = np.asarray(img.dataobj, np.float32)
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "clean.nii.gz")
    data[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "nan.nii.gz")
    clean, with_nan = (model_inputs(unit_images(tmp_path / f"{n}.nii.gz", PRE), PRE) for n in ("clean", "nan"))
    assert with_nan.max() > 0 and (with_nan != clean).mean() < 0.01  # the CT window, as without the voxel
