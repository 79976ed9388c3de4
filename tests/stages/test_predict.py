"""stages.predict: masks come back in each source's own geometry, from the checkpoint alone."""
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

import medseg.prediction as prediction
from medseg.checkpoints import save_checkpoint
from medseg.errors import MedsegError
from medseg.preprocess import normalise_volume
from models import build_model
from tests.conftest import REPO

PRE = {"size": 32, "channels": 1, "window_level": -600, "window_width": 1500, "dataset": "phantom"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    model = build_model("unet", 1, width=4)
    save_checkpoint(path, {"model": "unet", "model_params": {"width": 4}, "in_channels": 1,
                           "state_dict": model.state_dict(), "preprocess": PRE, "threshold": 0.5})
    return path


def identity_probs(model, images, device, batch_size=32, amp_dtype=None, tta=False):
    """Stand-in for the network: the probability is the input intensity, so geometry is checkable."""
    return images[..., 0].astype(np.float32) / 255.0


def test_nifti_mask_keeps_shape_affine_and_orientation(tmp_path, monkeypatch, make_phantom):
    monkeypatch.setattr(prediction, "predict_probs", identity_probs)
    make_phantom("msd", tmp_path / "raw", cases=1, depth=8, size=32, seed=0)
    source = tmp_path / "raw/imagesTr/phantom_000.nii.gz"
    original = nib.load(source)
    predict_volume = volume = prediction.predict_nifti(source, None, PRE, torch.device("cpu"), 0.5, False)
    assert volume.shape == original.shape and np.allclose(volume.affine, original.affine)
    expected = normalise_volume(np.asarray(original.dataobj, np.float32), "CT", PRE) >= 0.5
    agreement = (np.asarray(predict_volume.dataobj) > 0) == expected
    assert agreement.mean() > 0.99  # equal up to quantisation at the threshold


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
