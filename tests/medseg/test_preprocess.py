"""medseg.preprocess: one path from source pixels to the model's uint8 input, shared by convert
and predict. The decisive test: for a raw file, predict's model input is bit-identical to the
slice PNG that convert wrote for it, for NIfTI, DICOM and 2D images."""
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medseg.conversion import convert_all
from medseg.datasets.registry import format_for
from medseg.prediction import model_inputs, unit_images
from medseg.preprocess import dicom_unit_range, match_channels, model_input, model_mask, normalise_volume
from medseg.params import ConvertParams
from medseg.slices import read_png
from tests.conftest import REPO, reader

CONVERT = ConvertParams.load(REPO / "params.yaml").with_values(workers=1)


def converted(tmp_path: Path, dataset: str, make_phantom, normalize: str = "none") -> tuple[Path, pd.DataFrame, dict]:
    """A small phantom of `dataset` in its raw format, converted; the raw folder, the manifest and
    the preprocessing a checkpoint would carry (what convert wrote to info.json)."""
    raw = make_phantom(dataset, cases=3, depth=6, size=56, seed=4)
    fmt = format_for(dataset)
    cfg = reader(size=40, normalize=normalize)
    manifest, _ = convert_all(fmt.__name__, fmt.list_cases(raw), cfg, CONVERT, raw, tmp_path / "slices")
    pre = {"dataset": dataset, "channels": fmt.CHANNELS, "size": 40, "window_level": cfg.window_level,
           "window_width": cfg.window_width,
           **({"normalize": normalize} if normalize != "none" else {})}
    return raw, manifest, pre


@pytest.mark.parametrize("dataset, pattern, normalize", [
    ("phantom", "imagesTr/*.nii.gz", "none"), ("phantom_siim", "**/*.dcm", "none"), ("phantom_isic", "**/*.jpg", "none"),
    ("phantom_lgg", "**/*[0-9].tif", "none"), ("phantom_lgg", "**/*[0-9].tif", "volume")])
def test_predict_input_is_bit_identical_to_the_converted_slice(tmp_path, dataset, pattern, normalize, make_phantom):
    """predict feeds a model exactly the slice convert stored; a volume-normalised LGG slice file
    takes its patient folder's range, as convert took the patient's."""
    raw, manifest, pre = converted(tmp_path, dataset, make_phantom, normalize)
    sources = sorted(raw.glob(pattern))
    assert sources
    compared = 0
    for source in sources:
        rel = str(source.relative_to(raw))
        rows = manifest[manifest["source"] == rel]
        if dataset == "phantom_lgg":  # a patient's source is its folder; one row per slice file
            rows = manifest[manifest["slice_id"] == f"{source.parent.name}_{int(source.stem.split('_')[-1]):04d}"]
        fed = model_inputs(unit_images(source, pre), pre)
        assert len(fed) == len(rows), rel
        for row, array in zip(rows.sort_values("index").itertuples(), fed):
            stored = read_png(tmp_path / "slices/images" / f"{row.slice_id}.png", pre["channels"])
            assert array.dtype == np.uint8 and array.shape == stored.shape, rel
            assert np.array_equal(array, stored), f"{rel} slice {row.index}"
            compared += 1
    assert compared >= len(sources)
    assert any(np.ptp(read_png(p, pre["channels"])) > 0 for p in (tmp_path / "slices/images").iterdir())


def test_monochrome1_is_inverted_and_bits_scale():
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME1", 12, 0
    out = dicom_unit_range(ds, np.array([[0, 4095], [1365, 4095]], np.uint16))
    assert out.shape == (2, 2, 1)
    assert np.allclose(out[..., 0], [[1.0, 0.0], [1 - 1365 / 4095, 0.0]])
    ds.PhotometricInterpretation, ds.BitsStored = "MONOCHROME2", 8  # header too small: min/max
    assert np.allclose(dicom_unit_range(ds, np.array([[100, 300]], np.uint16))[..., 0], [[0.0, 1.0]])


def test_ct_window_and_mr_percentile():
    ct = normalise_volume(np.array([-1350.0, -600.0, 150.0, 3000.0]), "CT", (-600, 1500))
    assert np.allclose(ct, [0.0, 0.5, 1.0, 1.0])
    mr = normalise_volume(np.concatenate([np.zeros(50), np.linspace(1, 100, 1000)]), "MR", (-600, 1500))
    assert mr.min() == 0.0 and mr.max() == 1.0 and np.isclose(np.median(mr[50:]), 0.5, atol=0.01)


def test_model_mask_keeps_the_majority_label_of_each_pixel_not_a_nearest_sample():
    """256 -> 96 px: a pixel is foreground when most of its area is; nearest sampling would alias a
    thin structure into a dotted line (or drop it), majority keeps its share."""
    yy, xx = np.mgrid[0:256, 0:256]
    disc = (yy - 128) ** 2 + (xx - 100) ** 2 < 40 ** 2
    small = model_mask(disc, 96)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}
    assert abs(small.sum() * (256 / 96) ** 2 / disc.sum() - 1) < 0.03  # the area is kept within 3 %
    stripe = np.zeros((256, 256), bool)
    stripe[:, 123:125] = True  # 2 px wide, between two nearest samples (columns 122 and 125)
    assert model_mask(stripe, 96).any(axis=1).all()  # one unbroken line, row after row
    labels = np.zeros((256, 256), np.uint8)
    labels[:, :128], labels[:128, 128:] = 2, 4  # a label map: no value is ever averaged into a new one
    coded = model_mask(labels, 96)
    assert set(np.unique(coded)) == {0, 2, 4} and coded[10, 10] == 2 and coded[10, 90] == 4 and coded[90, 90] == 0
    half = np.zeros((2, 2), bool)
    half[0] = True  # an even tie of two labels goes to the lower code (background)
    assert model_mask(half, 1).item() == 0
    assert np.array_equal(model_mask(disc, 256), disc.astype(np.uint8))  # same size: unchanged
    quadrant = np.zeros((32, 32), bool)
    quadrant[:16, :16] = True  # enlarging: the quadrant stays the quadrant
    assert np.array_equal(model_mask(quadrant, 64)[:31, :31], np.kron(quadrant, np.ones((2, 2), bool))[:31, :31])


def test_model_input_matches_channels_and_quantises():
    grey = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48, 1)
    colour = model_input(grey, 16, 3)
    assert colour.shape == (16, 16, 3) and colour.dtype == np.uint8
    assert np.array_equal(colour[..., 0], colour[..., 2]) and colour.min() < 10 and colour.max() > 245
    back = model_input(match_channels(grey, 3), 16, 1)
    assert back.shape == (16, 16, 1) and np.array_equal(back[..., 0], colour[..., 0])
