"""SIIM-ACR: the relative column-major RLE, the DICOM + CSV reader, its phantom, and the real sample."""
import gzip
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medseg.datasets import CaseRef, siim
from medseg.datasets.rle import rle_decode, rle_encode
from medseg.errors import MedsegError
from tests.conftest import REALDATA, reader

REAL = REALDATA / "siim"
REAL_DICOM = REAL / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
needs_real = pytest.mark.skipif(not REAL_DICOM.exists(), reason="../shared/realdata/siim is absent")


# --- RLE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["-1", " -1", "-1 ", "  -1  "])
def test_minus_one_is_an_empty_mask(text):
    mask = rle_decode(text, 3, 4)
    assert mask.shape == (3, 4) and mask.dtype == bool and not mask.any()


def test_single_pixel_at_first_and_last_index():
    first = np.zeros((3, 4), bool)
    first[0, 0] = True
    assert np.array_equal(rle_decode("0 1", 3, 4), first)
    last = np.zeros((3, 4), bool)
    last[2, 3] = True  # flat index 11 is the bottom of the last column
    assert np.array_equal(rle_decode("11 1", 3, 4), last)
    assert rle_encode(first) == "0 1" and rle_encode(last) == "11 1"


def test_column_major_relative_runs_against_a_hand_made_mask():
    # 3 rows x 4 columns; flat column-major indices: column c holds 3c, 3c+1, 3c+2 (top to bottom)
    # runs: pixels 1-2 (offset 1, length 2), then 7-8 (offset 7-3=4 from the end of the first run)
    expected = np.array([
        [False, False, False, False],
        [True, False, True, False],
        [True, False, True, False],
    ])
    assert np.array_equal(rle_decode("1 2 4 2", 3, 4), expected)
    assert rle_encode(expected) == "1 2 4 2"
    wide = np.zeros((2, 5), bool)
    wide[0, 1:4] = True  # a horizontal line is one pixel per column: separate runs, offset 1 apart
    assert rle_encode(wide) == "2 1 1 1 1 1"


def test_touching_runs_merge():
    # offset 0 starts a run right where the previous one ends: four pixels in a row
    expected = np.zeros((4, 2), bool)
    expected[:, 0] = True
    assert np.array_equal(rle_decode("0 2 0 2", 4, 2), expected)
    assert rle_encode(expected) == "0 4"  # the encoder writes the canonical, merged form
    assert np.array_equal(rle_decode("0 8", 4, 2), np.ones((4, 2), bool))  # ends exactly at the end


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "odd number of values (3)"),
    ("0 2 7 2", "RLE runs past the image end (pixel 11 of 2x5 = 10)"),
    ("0 11", "RLE runs past the image end"),
    ("1 x", "non-integer token 'x'"),
    ("1.5 2", "non-integer token '1.5'"),
    ("3 -2", "negative number (-2)"),
    ("-1 2", "negative number (-1)"),
    ("", "blank"),
    ("1 1234567890123456789", "out-of-range number"),
])
def test_bad_rle_is_a_one_line_error(text, message):
    with pytest.raises(MedsegError, match="RLE") as err:
        rle_decode(text, 2, 5)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_round_trip_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < rng.uniform(0, 1)
        assert np.array_equal(rle_decode(rle_encode(mask), h, w), mask)
    assert rle_encode(np.zeros((5, 5), bool)) == "-1"
    assert rle_encode(np.ones((5, 5), bool)) == "0 25"


# --- phantom and reader ----------------------------------------------------------------------

CASES = 20


@pytest.fixture(scope="module")
def phantom(tmp_path_factory, make_phantom):
    root = tmp_path_factory.mktemp("raw") / "phantom_siim"
    root.mkdir()  # the download stage creates the target before calling the writer
    return make_phantom("siim", root, cases=CASES, depth=99, size=64, seed=5)


def _phi(root: Path) -> list[str]:
    values = []
    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values += [str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate)]
    return sorted(set(values))


def test_phantom_layout_and_csv(phantom):
    lines = (phantom / "train-rle.csv").read_text().splitlines()
    assert lines[0] == "ImageId, EncodedPixels"
    ids = [line.split(",")[0] for line in lines[1:]]
    assert all(line.split(",")[1].startswith(" ") for line in lines[1:])
    dicoms = sorted(phantom.rglob("*.dcm"))
    assert len(dicoms) == CASES == len(set(ids))
    assert all(p.relative_to(phantom).parts[0] == "dicom-images-train" and len(p.relative_to(phantom).parts) == 4
               for p in dicoms)
    assert {p.stem for p in dicoms} == set(ids)
    ds = pydicom.dcmread(dicoms[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.pixel_array.dtype == np.uint16
    assert ds.SOPInstanceUID == dicoms[0].stem
    empty = sum(line.endswith(", -1") for line in lines[1:])
    assert empty == 14  # 30 % of 20 positive
    assert len(lines) - 1 > CASES  # some positives span two rows


def test_phantom_is_deterministic_by_seed(tmp_path, make_phantom):
    for name in ("a", "b"):
        make_phantom("siim", tmp_path / name, cases=4, depth=1, size=32, seed=9)
    a, b = (sorted(p.relative_to(tmp_path / n) for p in (tmp_path / n).rglob("*")) for n in ("a", "b"))
    assert a == b
    for rel in a:
        if (tmp_path / "a" / rel).is_file():
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_phantom_round_trip(phantom):
    cases = siim.list_cases(phantom)
    assert siim.count_summary(cases) == {"images": CASES} and siim.CHANNELS == 1
    assert [c.case_id for c in cases] == sorted(c.case_id for c in cases)
    table = pd.read_csv(phantom / "train-rle.csv", dtype=str)
    table.columns = [c.strip() for c in table.columns]
    rows = table.groupby("ImageId")["EncodedPixels"].apply(list).to_dict()
    split = 0
    for case in cases:
        (sl,) = siim.read_case(case, reader())
        assert sl.index == 0 and sl.image.shape == (64, 64, 1) and sl.mask.shape == (64, 64)
        assert sl.image.dtype == np.float32 and 0.0 <= sl.image.min() < sl.image.max() <= 1.0
        assert sl.spacing == pytest.approx((0.168 * 16, 0.168 * 16, 0.0), abs=1e-3)
        written = rows[case.case_id]
        if written == [" -1"]:
            assert case.extra == () and not sl.mask.any()
            continue
        parts = [rle_decode(r, 64, 64) for r in written]
        assert np.array_equal(sl.mask, np.logical_or.reduce(parts))
        if len(parts) == 2:
            split += 1
            assert parts[0].any() and parts[1].any() and not (parts[0] & parts[1]).any()
            assert not np.array_equal(sl.mask, parts[0])  # the union is more than the first row
        pixels = sl.image[..., 0]
        lung = pixels[(pixels > 0.1) & (pixels < 0.35) & ~sl.mask]
        assert pixels[sl.mask].mean() < lung.mean()  # the label sits on air without lung markings
    assert split >= 1
    assert sum(bool(c.extra) for c in cases) == 6


def test_groups_hash_the_patient_id(phantom):
    cases = siim.list_cases(phantom)
    assert all(c.group.startswith("pt_") and len(c.group) == 19 for c in cases)
    by_patient = {}
    for case in cases:
        patient = str(pydicom.dcmread(case.image, stop_before_pixels=True).PatientID)
        by_patient.setdefault(patient, set()).add(case.group)
    assert all(len(groups) == 1 for groups in by_patient.values())  # one group per patient
    assert len({c.group for c in cases}) == len(by_patient) < CASES  # patients with two images
    assert siim.list_cases(phantom)[3].group == cases[3].group  # stable across runs


def test_missing_patient_id_falls_back_to_the_image(phantom, tmp_path):
    root = tmp_path / "siim"
    shutil.copytree(phantom, root)
    path = sorted(root.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    del ds.PatientID
    ds.save_as(path)
    group = next(c.group for c in siim.list_cases(root) if c.image == path)
    assert group.startswith("img_") and len(group) == 20


def test_no_patient_data_leaks(phantom, caplog):
    phi = _phi(phantom)
    assert len(phi) > CASES  # names, ids and birth dates are really in the files
    caplog.set_level(logging.DEBUG)
    cases = siim.list_cases(phantom)
    slices = [sl for case in cases for sl in siim.read_case(case, reader())]
    returned = " ".join(repr(c) for c in cases) + " " + " ".join(repr(s.spacing) for s in slices)
    for value in phi:
        assert value not in returned and value not in caplog.text


def test_shallowest_copy_and_clutter(phantom, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(phantom, raw / "top")
    shutil.copytree(phantom, raw / "top" / "pneumothorax")  # the mirror's duplicate copy
    shutil.copytree(phantom, raw / "__MACOSX" / "top")
    first = next((raw / "top" / "dicom-images-train").rglob("*.dcm"))
    (first.parent / f"._{first.name}").write_bytes(b"\x00\x05\x16\x07 not a dicom")
    assert siim.find_root(raw) == raw / "top"
    cases = siim.list_cases(raw)
    assert len(cases) == CASES and all("pneumothorax" not in c.image.parts for c in cases)


def test_unmatched_rows_and_images_are_reported_and_left_out(phantom, tmp_path, caplog):
    root = tmp_path / "siim"
    shutil.copytree(phantom, root)
    csv = root / "train-rle.csv"
    lines = csv.read_text().splitlines()
    dropped_id = lines[1].split(",")[0]
    kept = [line for line in lines if not line.startswith(dropped_id)]
    csv.write_text("\n".join(kept + ["1.2.3.4.5.404, -1", "1.2.3.4.5.405,0 3"]) + "\n")
    with caplog.at_level(logging.WARNING):
        cases = siim.list_cases(root)
    assert len(cases) == CASES - 1 and dropped_id not in {c.case_id for c in cases}
    assert "1 DICOM images have no row" in caplog.text
    assert "2 ImageIds have no DICOM file" in caplog.text


def test_header_without_leading_space_and_bad_rows(phantom, tmp_path):
    root = tmp_path / "siim"
    shutil.copytree(phantom, root)
    csv = root / "train-rle.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(["ImageId,EncodedPixels"] + [l.replace(", ", ",") for l in lines[1:]]) + "\n")
    assert len(siim.list_cases(root)) == CASES
    csv.write_text("\n".join(lines[:3] + [lines[3].split(",")[0] + ", 5 2 7"]) + "\n")
    with pytest.raises(MedsegError, match=r"train-rle.csv: line 4 \(ImageId .*\): RLE has an odd number"):
        siim.list_cases(root)
    csv.write_text("Image,Pixels\n")
    with pytest.raises(MedsegError, match="no column 'ImageId'"):
        siim.list_cases(root)


def test_mask_that_does_not_fit_the_image(phantom):
    case = siim.list_cases(phantom)[0]
    big = CaseRef(case.case_id, case.group, case.image, case.label, extra=(f"{64 * 64 - 2} 5",))
    with pytest.raises(MedsegError, match=r"ImageId .*RLE runs past the image end.*the DICOM is 64x64"):
        next(siim.read_case(big, reader()))


def test_truncated_dicom_names_the_file(phantom, tmp_path):
    case = siim.list_cases(phantom)[0]
    broken = tmp_path / case.image.name
    data = case.image.read_bytes()
    broken.write_bytes(data[: len(data) - 3000])  # pixel data cut short
    with pytest.raises(MedsegError, match=rf"{broken.name}: cannot read DICOM \(") as err:
        next(siim.read_case(CaseRef(case.case_id, case.group, broken, case.label), reader()))
    assert "\n" not in str(err.value)
    for size in (100, 200, 600):  # header cut short: before DICM, in the file meta, in the dataset
        broken.write_bytes(data[:size])
        with pytest.raises(MedsegError, match=rf"{broken.name}: cannot read DICOM \("):
            siim.patient_group(broken)


def test_missing_layout_is_reported(tmp_path):
    with pytest.raises(MedsegError, match="no folder holding both dicom-images-train/ and train-rle.csv"):
        siim.list_cases(tmp_path)


# --- real data -------------------------------------------------------------------------------

def _absolute_runs_encoder(mask: np.ndarray) -> str:
    """Independent of rle_encode: foreground pixel indices, split where they stop being consecutive,
    as absolute (start, length) runs first and converted to relative offsets afterwards."""
    pixels = np.flatnonzero(mask.T.reshape(-1))
    if pixels.size == 0:
        return "-1"
    breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
    starts = pixels[np.r_[0, breaks]]
    lengths = np.diff(np.r_[0, breaks, pixels.size])
    previous_ends = np.r_[0, (starts + lengths)[:-1]]
    return " ".join(f"{s} {n}" for s, n in zip(starts - previous_ends, lengths))


@pytest.fixture(scope="module")
def real_csv():
    with gzip.open(REAL / "train-rle.csv.gz", "rt") as fh:
        return pd.read_csv(fh)


@needs_real
def test_real_csv_counts(real_csv):
    assert list(real_csv.columns) == ["ImageId", " EncodedPixels"]  # the mirror's leading space
    values = real_csv[" EncodedPixels"].str.strip()
    assert len(real_csv) == 12954 and real_csv["ImageId"].nunique() == siim.EXPECTED["images"] == 12047
    assert real_csv.loc[values != "-1", "ImageId"].nunique() == 2669
    assert real_csv.groupby("ImageId").size().max() == 10  # one image has ten instances


@needs_real
def test_real_rle_decodes_and_re_encodes_to_the_same_string(real_csv):
    rows = real_csv[" EncodedPixels"].str.strip()
    positive = rows[rows != "-1"].tolist()
    assert len(positive) == 3576
    deadline, checked = time.perf_counter() + 10.0, 0
    for text in positive:
        assert _absolute_runs_encoder(rle_decode(text, 1024, 1024)) == text
        checked += 1
        if checked >= 300 and time.perf_counter() > deadline:
            break  # a slow machine checks what fits in ten seconds, and at least 300 rows


# areas (pixels of the union of an image's rows) computed with a pure-Python set of absolute
# pixel positions, not with rle_decode; the last two images have overlapping rows
REAL_AREAS = {
    "1.2.276.0.7230010.3.1.4.8323329.11478.1517875233.132109": 16671,
    "1.2.276.0.7230010.3.1.4.8323329.31972.1517875157.790125": 1201,
    "1.2.276.0.7230010.3.1.4.8323329.10779.1517875225.609424": 34831,  # 5 rows, 55204 summed
    "1.2.276.0.7230010.3.1.4.8323329.1851.1517875169.919023": 56347,  # 10 rows, 62212 summed
}


@needs_real
def test_real_union_areas(real_csv, tmp_path):
    real_csv.columns = [c.strip() for c in real_csv.columns]
    for image_id, area in REAL_AREAS.items():
        rle = tuple(real_csv.loc[real_csv["ImageId"] == image_id, "EncodedPixels"].str.strip())
        case = CaseRef(image_id, "g", tmp_path / f"{image_id}.dcm", tmp_path / "train-rle.csv", extra=rle)
        assert int(siim.read_mask(case, 1024, 1024).sum()) == area


@needs_real
def test_real_dicom_through_the_reader(tmp_path, caplog):
    folder = tmp_path / "raw" / "dicom-images-train" / "a" / "b"
    folder.mkdir(parents=True)
    shutil.copy(REAL_DICOM, folder / REAL_DICOM.name)
    (tmp_path / "raw" / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{REAL_DICOM.stem}, -1\n")
    caplog.set_level(logging.DEBUG)
    (case,) = siim.list_cases(tmp_path / "raw")
    assert case.case_id == REAL_DICOM.stem and case.extra == ()
    (sl,) = siim.read_case(case, reader())
    assert sl.image.shape == (1024, 1024, 1) and sl.mask.shape == (1024, 1024) and not sl.mask.any()
    assert 0.0 <= sl.image.min() and sl.image.max() <= 1.0 and sl.image.std() > 0.05
    assert sl.spacing == pytest.approx((0.168, 0.168, 0.0))
    ds = pydicom.dcmread(REAL_DICOM, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG Baseline, decoded by Pillow
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate)):
        if value:
            assert value not in repr(case) and value not in caplog.text
