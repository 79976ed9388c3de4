"""The LGG phantom is written in the Kaggle kaggle_3m layout and read back by the real LGG reader;
the reader is also checked against four real patients in ../shared/realdata."""
import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.datasets.lgg import CHANNELS, EXPECTED, count_summary, list_cases, mask_path, read_case
from medseg.errors import MedsegError
from tests.conftest import REALDATA, reader

REAL = REALDATA / "lgg"
real_only = pytest.mark.skipif(not (REAL / "kaggle_3m").is_dir(), reason="../shared/realdata/lgg is absent")


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom("lgg", cases=6, depth=16, size=48, seed=3)


@pytest.fixture(scope="module")
def phantom_slices(phantom) -> dict[str, list]:
    return {c.case_id: list(read_case(c, reader())) for c in list_cases(phantom)}


def _copy(phantom: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(phantom, copy)
    return copy


def _brain(image: np.ndarray) -> np.ndarray:
    return image[..., 1] > 0.33  # brain tissue; skull (0.2) and ventricles are darker in FLAIR


def test_layout_and_data_csv(phantom):
    base = phantom / "kaggle_3m"
    with (base / "data.csv").open() as handle:
        patients = [row["Patient"] for row in csv.DictReader(handle)]
    assert patients == [f"TCGA_PH_{i:04d}" for i in range(1, 7)]
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == [f"{p}_20000101" for p in patients]
    tif = next((base / "TCGA_PH_0001_20000101").glob("*_1.tif"))
    with Image.open(tif) as img:
        assert img.mode == "RGB" and img.size == (48, 48)
    with Image.open(mask_path(tif)) as img:
        assert img.mode == "L" and set(np.unique(np.asarray(img))) <= {0, 255}


def test_deterministic_by_seed(tmp_path, make_phantom):
    make_phantom("lgg", tmp_path / "a", cases=2, depth=6, size=24, seed=7)
    make_phantom("lgg", tmp_path / "b", cases=2, depth=6, size=24, seed=7)
    for name in ("TCGA_PH_0002_20000101/TCGA_PH_0002_20000101_3.tif", "data.csv"):
        assert (tmp_path / "a/kaggle_3m" / name).read_bytes() == (tmp_path / "b/kaggle_3m" / name).read_bytes()


def test_cases_groups_and_counts(phantom):
    cases = list_cases(phantom)
    assert [c.case_id for c in cases] == [f"TCGA_PH_{i:04d}_20000101" for i in range(1, 7)]
    assert all(c.group == c.case_id == c.image.name and c.label is None for c in cases)
    n_files = sum(1 for p in (phantom / "kaggle_3m").rglob("*.tif") if not p.stem.endswith("_mask"))
    assert count_summary(cases) == {"patients": 6, "slices": n_files}
    assert count_summary(cases).keys() == EXPECTED.keys()
    depths = {len(c.extra) for c in cases}
    assert len(depths) > 1 and min(depths) >= 12 and max(depths) <= 20  # 16 +- 25 %


def test_slices_in_numeric_order(phantom, phantom_slices):
    for case in list_cases(phantom):
        indices = [s.index for s in phantom_slices[case.case_id]]
        assert indices == list(range(1, len(indices) + 1))
        assert max(indices) >= 10 and sorted(map(str, indices)) != list(map(str, indices))
        assert [int(p.stem.rsplit("_", 1)[1]) for p in case.extra] == indices


def test_slice_arrays(phantom_slices):
    sl = phantom_slices["TCGA_PH_0001_20000101"][5]
    assert sl.image.shape == (48, 48, CHANNELS) and sl.image.dtype == np.float32
    assert 0.0 <= sl.image.min() and sl.image.max() <= 1.0
    assert sl.mask.shape == (48, 48) and sl.mask.dtype == bool and sl.spacing is None


def test_channel_order_preserved(phantom, phantom_slices):
    """Stored order pre-contrast, FLAIR, post-contrast has brain levels about 0.35, 0.55, 0.25."""
    for slices in phantom_slices.values():
        stack = np.stack([s.image for s in slices])
        brain = _brain(stack) & ~np.stack([s.mask for s in slices])
        pre, flair, post = (stack[..., i][brain].mean() for i in range(3))
        assert flair > pre + 0.05 > post + 0.1
    case = list_cases(phantom)[2]
    sl = phantom_slices[case.case_id][7]
    with Image.open(case.extra[7]) as img:
        stored = np.asarray(img)  # PIL gives the file's channel order
    assert np.array_equal(np.round(sl.image * 255).astype(np.uint8), stored)


def test_masks_on_flair_tumour(phantom_slices):
    slices = [s for group in phantom_slices.values() for s in group]
    tumour = np.concatenate([s.image[s.mask] for s in slices])
    brain = np.concatenate([s.image[_brain(s.image) & ~s.mask] for s in slices])
    assert tumour[:, 1].mean() > brain[:, 1].mean() + 0.2  # bright in FLAIR
    assert abs(tumour[:, 0].mean() - brain[:, 0].mean()) < 0.15  # not in pre-contrast
    positives = sum(s.mask.any() for s in slices)
    assert 0 < positives < len(slices) / 2


def test_some_patients_tumour_free(tmp_path, make_phantom):
    make_phantom("lgg", tmp_path, cases=30, depth=4, size=16, seed=1)
    free = sum(not any(s.mask.any() for s in read_case(c, reader())) for c in list_cases(tmp_path))
    assert 2 <= free <= 12  # about 20 %


def test_shallowest_copy_only(tmp_path, make_phantom):
    """The Kaggle archive holds kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/: read one copy."""
    make_phantom("lgg", tmp_path / "raw", cases=2, depth=4, size=16, seed=1)
    make_phantom("lgg", tmp_path / "raw" / "lgg-mri-segmentation", cases=2, depth=4, size=16, seed=1)
    make_phantom("lgg", tmp_path / "raw" / "__MACOSX", cases=3, depth=4, size=16, seed=1)
    cases = list_cases(tmp_path / "raw")
    assert len(cases) == 2 and all(c.image.parent == tmp_path / "raw" / "kaggle_3m" for c in cases)
    nested = list_cases(tmp_path / "raw" / "lgg-mri-segmentation")
    assert [c.case_id for c in nested] == [c.case_id for c in cases]


def test_nested_root_and_mac_clutter(tmp_path, make_phantom):
    raw = tmp_path / "raw"
    make_phantom("lgg", raw / "lgg-mri-segmentation", cases=2, depth=4, size=16, seed=1)
    folder = raw / "lgg-mri-segmentation" / "kaggle_3m" / "TCGA_PH_0001_20000101"
    (folder / "._TCGA_PH_0001_20000101_1.tif").write_bytes(b"mac")
    (folder / "._TCGA_PH_0001_20000101_1_mask.tif").write_bytes(b"mac")
    cases = list_cases(raw)
    assert len(cases) == 2 and count_summary(cases)["slices"] == sum(len(c.extra) for c in cases)
    assert all(not p.name.startswith("._") for c in cases for p in c.extra)
    assert len(list(read_case(cases[0], reader()))) == len(cases[0].extra)


def test_missing_mask_is_reported(phantom, tmp_path):
    copy = _copy(phantom, tmp_path)
    (copy / "kaggle_3m/TCGA_PH_0002_20000101/TCGA_PH_0002_20000101_11_mask.tif").unlink()
    with pytest.raises(MedsegError, match=r"TCGA_PH_0002_20000101_11\.tif: no mask file"):
        list_cases(copy)


def test_orphan_mask_is_reported(phantom, tmp_path):
    copy = _copy(phantom, tmp_path)
    (copy / "kaggle_3m/TCGA_PH_0003_20000101/TCGA_PH_0003_20000101_4.tif").unlink()
    with pytest.raises(MedsegError, match=r"TCGA_PH_0003_20000101_4_mask\.tif: mask without image"):
        list_cases(copy)


@pytest.mark.parametrize("name", ["TCGA_PH_0001_20000101_2.tif", "TCGA_PH_0001_20000101_2_mask.tif"])
def test_truncated_tif_is_reported(phantom, tmp_path, name):
    copy = _copy(phantom, tmp_path)
    path = copy / "kaggle_3m/TCGA_PH_0001_20000101" / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    case = list_cases(copy)[0]
    with pytest.raises(MedsegError, match=re.escape(f"{name}: cannot read image")):
        list(read_case(case, reader()))


def test_no_kaggle_folder(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(MedsegError, match=r"no kaggle_3m/ folder"):
        list_cases(tmp_path)


@real_only
def test_real_patients_counts_and_groups():
    cases = list_cases(REAL)
    assert count_summary(cases) == {"patients": 4, "slices": 80}
    assert {c.group for c in cases} == {p.name for p in (REAL / "kaggle_3m").iterdir() if p.is_dir()}
    slices = [s for c in cases for s in read_case(c, reader())]
    assert len(slices) == 80 and sum(s.mask.any() for s in slices) == 31
    assert all(s.image.shape == (256, 256, 3) and s.mask.shape == (256, 256) for s in slices)
    assert [s.index for s in read_case(cases[0], reader())] == list(range(1, 21))


@real_only
def test_real_channel_order_matches_pil():
    case = list_cases(REAL)[0]
    path = case.extra[9]
    sl = next(s for s in read_case(case, reader()) if s.index == 10)
    with Image.open(path) as img:
        stored = np.asarray(img.convert("RGB"))
    assert not np.array_equal(stored[..., 0], stored[..., 2])  # the check can tell channels apart
    assert np.array_equal(np.round(sl.image * 255).astype(np.uint8), stored)
    with Image.open(mask_path(path)) as img:
        assert np.array_equal(sl.mask, np.asarray(img) > 127)


def test_volume_normalisation_undoes_a_scanner_s_brightness(phantom, tmp_path):
    """The same patient filed at half the brightness (a darker scanner) reads back alike with
    `normalize: volume` (rescaled to its own MR range per channel) and half as bright without."""
    copy = _copy(phantom, tmp_path)
    case = list_cases(copy)[0]
    for image in case.extra:
        pixels = np.asarray(Image.open(image))
        Image.fromarray((pixels // 2).astype(np.uint8)).save(image)
    original = next(c for c in list_cases(phantom) if c.case_id == case.case_id)
    plain = [s.image for s in read_case(original, reader())]
    dark = [s.image for s in read_case(case, reader())]
    assert np.mean(dark) == pytest.approx(np.mean(plain) / 2, rel=0.02)
    bright_vol = [s.image for s in read_case(original, reader(normalize="volume"))]
    dark_vol = [s.image for s in read_case(case, reader(normalize="volume"))]
    assert np.abs(np.stack(bright_vol) - np.stack(dark_vol)).mean() < 0.01
    assert max(float(np.percentile(np.stack(dark_vol)[..., c], 99.9)) for c in range(CHANNELS)) == pytest.approx(1.0)
    assert [s.mask.sum() for s in read_case(case, reader(normalize="volume"))] == [s.mask.sum() for s in
                                                                                read_case(original, reader())]
