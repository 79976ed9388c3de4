"""stages.predict: masks come back in each source's own geometry, from the model alone (a checkpoint
or a k-fold model folder; the ONNX path is tested with stages.export in test_export.py)."""
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import medseg.prediction as prediction
from medseg.errors import MedsegError
from medseg.preprocess import normalise_volume
from tests.conftest import REPO
from tests.tiny_models import PRE, kfold_folder, save_tiny

# stand-in for the network: the probability is the input intensity, so geometry is checkable
IDENTITY = prediction.Predictor(lambda images: images[..., 0].astype(np.float32) / 255.0, PRE, 0.5, "identity")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "best.pt")


def test_nifti_mask_keeps_shape_affine_and_orientation(tmp_path, make_phantom):
    make_phantom("msd", tmp_path / "raw", cases=1, depth=8, size=32, seed=0)
    source = tmp_path / "raw/imagesTr/phantom_000.nii.gz"
    original = nib.load(source)
    predict_volume = volume = prediction.predict_nifti(source, IDENTITY, 0.5)
    assert volume.shape == original.shape and np.allclose(volume.affine, original.affine)
    expected = normalise_volume(np.asarray(original.dataobj, np.float32), "CT", (PRE["window_level"], PRE["window_width"])) >= 0.5
    agreement = (np.asarray(predict_volume.dataobj) > 0) == expected
    assert agreement.mean() > 0.99  # equal up to quantisation at the threshold


def test_a_nifti_takes_the_recorded_volume_steps_and_a_png_its_slice_steps(tmp_path, make_phantom):
    """With evaluate's record the 3D steps act on a NIfTI's slices together (largest volume kept: one
    object left), and a 2D file gets min_area scaled from the model's size to its own."""
    make_phantom("msd", tmp_path / "raw", cases=1, depth=8, size=32, seed=0)
    phantom = nib.load(tmp_path / "raw/imagesTr/phantom_000.nii.gz")
    hu = np.full(phantom.shape, -1000, np.int16)  # air, and two bright objects: 4x4x3 and 6x6x5 voxels
    hu[4:8, 4:8, 1:4], hu[16:22, 16:22, 2:7] = 100, 100
    source = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(hu, phantom.affine, phantom.header), source)
    off = np.asarray(prediction.predict_nifti(source, IDENTITY, 0.5).dataobj) > 0
    steps = {"min_area": 0, "largest_component": False, "min_volume": 0, "largest_volume": True}
    kept = prediction.Predictor(IDENTITY.probs, PRE, 0.5, "identity", post={"steps": {"foreground": steps}, "size": 32})
    on = np.asarray(prediction.predict_nifti(source, kept, 0.5).dataobj) > 0
    assert ndimage.label(off, np.ones((3, 3, 3)))[1] > 1 and ndimage.label(on, np.ones((3, 3, 3)))[1] == 1
    assert off.sum() == 48 + 180 and on.sum() == 180
    image = np.zeros((64, 64), np.uint8)
    image[2:5, 2:5], image[20:40, 20:40] = 255, 255  # 9 px and 400 px at 64 px
    cv2.imwrite(str(tmp_path / "two.png"), image)
    speck = {"min_area": 3, "largest_component": False, "min_volume": 0, "largest_volume": False}  # 12 px at 64 px
    plain = prediction.predict_2d([tmp_path / "two.png"], IDENTITY, 0.5)[0][1]
    labels, count = ndimage.label(plain, np.ones((3, 3)))
    assert count == 2 and 4 < (labels == labels[3, 3]).sum() < 12  # the speck, about 9 px after the model's resize
    for size, speck_kept in ((32, False), (64, True)):  # 3 px at a 64-px model stays 3 px: the speck stays
        cleaned = prediction.Predictor(IDENTITY.probs, PRE, 0.5, "identity",
                                       post={"steps": {"foreground": speck}, "size": size})
        mask = prediction.predict_2d([tmp_path / "two.png"], cleaned, 0.5)[0][1]
        assert (mask == (plain if speck_kept else plain & (labels != labels[3, 3]))).all()


def test_2d_files_of_different_sizes_share_forward_passes_and_keep_their_masks(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate([(40, 40), (64, 48), (33, 70), (40, 40), (100, 20)]):
        paths.append(tmp_path / f"s{k}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (h, w), dtype=np.uint8))
    batches = []

    def counted(images: np.ndarray) -> np.ndarray:
        batches.append(len(images))
        return IDENTITY.probs(images)

    together = prediction.predict_2d(paths, prediction.Predictor(counted, PRE, 0.5, "identity"), 0.5)
    assert batches == [5]  # one pass for the five files
    for path, (image, mask) in zip(paths, together):
        alone_image, alone_mask = prediction.predict_2d([path], IDENTITY, 0.5)[0]
        assert mask.shape == cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape  # back in the file's own size
        assert np.array_equal(mask, alone_mask) and np.array_equal(image, alone_image)


def test_cli_on_png_dicom_and_folder(tmp_path, checkpoint, make_phantom):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "odd.png"), rng.integers(0, 255, (97, 131), dtype=np.uint8))
    cv2.imwrite(str(folder / "colour.jpg"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    make_phantom("siim", tmp_path / "siim", cases=1, depth=1, size=48, seed=0)
    dicom = next((tmp_path / "siim").rglob("*.dcm"))
    (folder / "._odd.png").write_bytes(b"mac clutter")
    (folder / "x.dcm").write_bytes(dicom.read_bytes())
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(checkpoint),
                             "--source", str(folder), "--out", str(out), "--overlay", "--tta"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out / "odd_mask.png"), cv2.IMREAD_UNCHANGED).shape == (97, 131)
    assert cv2.imread(str(out / "colour_mask.png"), cv2.IMREAD_UNCHANGED).shape == (40, 50)
    assert cv2.imread(str(out / "x_mask.png"), cv2.IMREAD_UNCHANGED).shape == (48, 48)
    assert (out / "odd_overlay.png").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith("_mask.png")) == \
        ["colour_mask.png", "odd_mask.png", "x_mask.png"]


def test_unreadable_file_is_one_clear_line(tmp_path, checkpoint):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(checkpoint),
                             "--source", str(bad), "--out", str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: cannot read image")
    assert "Traceback" not in result.stderr
    with pytest.raises(MedsegError, match="unsupported file type"):
        prediction.list_sources(Path(__file__))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((8, 8), np.uint8))
    for out in (images, tmp_path):  # the masks would land among the images (issue 27, 8)
        with pytest.raises(MedsegError, match=rf"--out {out}: is the --source folder {images} \(or holds it\)"):
            prediction.list_sources(images, skip=out)
    assert prediction.list_sources(images, skip=images / "masks") == [images / "a.png"]  # --out inside: skipped


def test_kfold_folder_averages_the_folds_at_the_ensemble_threshold(tmp_path):
    folder = kfold_folder(tmp_path / "unet", folds=3, threshold=0.42)
    ensemble = prediction.load_predictor(folder, tta=False)
    folds = [prediction.load_predictor(folder / f"fold_{k}" / "best.pt", tta=False) for k in range(3)]
    assert ensemble.threshold == 0.42 and {f.threshold for f in folds} == {0.9}  # ensemble.json's, not a fold's
    assert ensemble.preprocess == PRE and "3 fold(s)" in ensemble.runtime
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8)
    per_fold = np.stack([f.probs(images) for f in folds])
    assert np.allclose(ensemble.probs(images), per_fold.mean(axis=0), atol=1e-6)
    assert np.abs(per_fold[0] - per_fold[1]).max() > 1e-2  # the folds differ, so the mean is not any one of them
    (folder / "fold_2" / "best.pt").unlink()
    with pytest.raises(MedsegError, match="fold_2/best.pt: missing"):
        prediction.load_predictor(folder, tta=False)
