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
from medseg.preprocess import dicom_unit_range, match_channels, model_input, normalise_volume
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


def test_model_input_matches_channels_and_quantises():
    grey = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48, 1)
    colour = model_input(grey, 16, 3)
    assert colour.shape == (16, 16, 3) and colour.dtype == np.uint8
    assert np.array_equal(colour[..., 0], colour[..., 2]) and colour.min() < 10 and colour.max() > 245
    back = model_input(match_channels(grey, 3), 16, 1)
    assert back.shape == (16, 16, 1) and np.array_equal(back[..., 0], colour[..., 0])
