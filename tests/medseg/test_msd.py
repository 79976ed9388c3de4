"""The phantom is written in the MSD layout and read back by the real NIfTI converter; any Decathlon
task (label mapping, multi-modal images) on hand-made tasks and on a real BraTS 2013 case."""
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medseg.datasets.msd import list_cases, read_case
from medseg.errors import MedsegError
from tests.conftest import REALDATA, REPO, reader



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
    slices = [s for c in list_cases(phantom) for s in read_case(c, reader())]
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
    slices = list(read_case(cases[0], reader()))
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


# ---------------------------------------------------------------- any Decathlon task: labels, channels

BRATS_2013 = REALDATA / "brats_multiclass" / "brats_2013_pat0001_1"
BRATS_REGIONS = {"whole tumour": [1, 2, 3, 4], "tumour core": [1, 3, 4], "enhancing": [4]}  # BraTS 2013 labels


def write_task(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict | None = None,
               affine: np.ndarray | None = None) -> Path:
    """A Decathlon task folder: imagesTr/<case>.nii.gz (float32, 3D or 4D), labelsTr/<case>.nii.gz (uint8)."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, (image, label) in cases.items():
        nib.Nifti1Image(image.astype(np.float32), affine).to_filename(root / "imagesTr" / f"{name}.nii.gz")
        nib.Nifti1Image(label.astype(np.uint8), affine).to_filename(root / "labelsTr" / f"{name}.nii.gz")
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def display(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice k of a canonical (RAS) volume as convert shows it: rows anterior-to-posterior, columns
    patient right-to-left; written out here independently of medseg.preprocess.upright."""
    return np.flip(volume[:, :, k].T, axis=(0, 1))


def convert_task(root: Path, out: Path, labels: list[int] | None, size: int) -> tuple[pd.DataFrame, np.ndarray,
                                                                                       np.ndarray, int]:
    """The task converted as the convert stage does it; (manifest, images, masks, channels) read back."""
    from medseg.conversion import convert_all
    from medseg.params import ConvertParams
    from medseg.slices import load_arrays

    manifest, _ = convert_all("medseg.datasets.msd", list_cases(root), reader(size=size, labels=labels),
                              ConvertParams.load(REPO / "params.yaml").with_values(workers=0), root, out)
    channels = int(manifest["channels"].iloc[0])
    images, masks = load_arrays(out, manifest["slice_id"].tolist(), channels)
    return manifest, images, masks, channels


def multilabel_phantom(make_phantom, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The MSD phantom's first CT volume (LPS-stored, so reorientation is exercised) with a label
    of three blobs valued 1, 2 and 4, in the phantom's own affine. Returns the task and the label
    in canonical (RAS) order."""
    source = make_phantom("msd", cases=3, depth=8, size=32, seed=5)
    image = nib.load(source / "imagesTr" / "phantom_000.nii.gz")
    label = np.zeros(image.shape, np.uint8)
    label[4:10, 5:12, 1:4] = 1
    label[14:22, 8:14, 2:7] = 2
    label[20:26, 20:30, 0:3] = 4  # overlaps label 2's block: the later value wins there
    root = tmp_path / "Task90_Multi"
    write_task(root, {"multi_000": (np.asarray(image.dataobj), label)}, {"modality": {"0": "CT"}, "numTraining": 1},
               affine=image.affine)
    canonical = nib.as_closest_canonical(nib.load(root / "labelsTr" / "multi_000.nii.gz"))
    return root, np.asarray(canonical.dataobj)


@pytest.mark.parametrize("labels", [[1, 2, 4], [1, 4], [4], [2]])
def test_dataset_labels_select_the_foreground(make_phantom, tmp_path, labels):
    root, label = multilabel_phantom(make_phantom, tmp_path)
    manifest, _, masks, _ = convert_task(root, tmp_path / "slices", labels, size=32)
    expected = np.stack([display(np.isin(label, labels), k) for k in range(label.shape[2])])
    assert np.array_equal(masks.astype(bool), expected)
    assert manifest["fg_pixels"].sum() == np.isin(label, labels).sum() > 0


def test_multilabel_volume_without_labels_is_refused_with_the_fix(make_phantom, tmp_path):
    root, _ = multilabel_phantom(make_phantom, tmp_path)
    with pytest.raises(MedsegError, match=r"multi_000\.nii\.gz: labels 0, 1, 2, 4 found; only 0/1 labels are "
                                          r"supported .*set dataset\.labels .* e\.g\. \[1, 2, 4\]"):
        list(read_case(list_cases(root)[0], reader()))


def test_non_integer_label_values_are_refused(tmp_path):
    label = np.zeros((8, 8, 3))
    label[2:4, 2:4, 1] = 0.5
    root = write_task(tmp_path / "Task91", {"c": (np.random.default_rng(0).random((8, 8, 3)) * 100, label)})
    nib.Nifti1Image(label.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])).to_filename(root / "labelsTr" / "c.nii.gz")
    with pytest.raises(MedsegError, match=r"c\.nii\.gz: label values 0, 0\.5 are not all integers"):
        list(read_case(list_cases(root)[0], reader(labels=[1])))


def test_labels_are_refused_for_formats_with_binary_masks_and_when_empty():
    from medseg.datasets.registry import DatasetParams, reader_config
    from medseg.params import ConvertParams

    dataset, convert = DatasetParams.load(REPO / "params.yaml"), ConvertParams.load(REPO / "params.yaml")
    chosen = {"convert.size": {"value": 8, "why": "test"}}
    with pytest.raises(MedsegError, match=r"dataset\.labels=\[1\] applies to label volumes and maps \(phantom, msd, lung, folder, phantom_folder\); "
                                          r"lgg masks are binary images"):
        reader_config(dataset.with_values(name="lgg", labels=[1]), convert, chosen)
    with pytest.raises(MedsegError, match=r"dataset\.labels=\[\] selects no foreground"):
        reader_config(dataset.with_values(name="msd", labels=[]), convert, chosen)
    assert reader_config(dataset.with_values(name="lgg"), convert, chosen) == reader(size=8)


@pytest.mark.parametrize(("value", "needle"), [(["1"], r"dataset\.labels\[0\]='1' has the wrong type"),
                                               ([1, 0], r"dataset\.labels\[1\]=0 is out of range"),
                                               (4, r"dataset\.labels=4 has the wrong type")])
def test_labels_param_is_validated(tmp_path, value, needle):
    import yaml

    from medseg.datasets.registry import DatasetParams
    from tests.conftest import tiny_params

    params = tiny_params()
    params["dataset"]["labels"] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(MedsegError, match=needle):
        DatasetParams.load(tmp_path / "params.yaml")


@pytest.mark.parametrize("channels", [2, 4])
def test_multichannel_images_become_channels_each_normalised(tmp_path, channels):
    """A 4D MR image (e.g. MSD Prostate T2 + ADC, BraTS' four sequences): every modality a channel,
    percentile-normalised on its own, stored and read back unchanged."""
    rng = np.random.default_rng(channels)
    image = np.stack([rng.gamma(2.0, 50.0 * 10**c, (24, 20, 5)) for c in range(channels)], axis=3)
    label = np.zeros((24, 20, 5), np.uint8)
    label[5:12, 6:9, 2] = 1
    meta = {"modality": {str(c): f"MR{c}" for c in range(channels)}, "numTraining": 1}
    root = write_task(tmp_path / "Task92", {"mm_000": (image, label)}, meta)
    slices = list(read_case(list_cases(root)[0], reader()))
    stack = np.stack([s.image for s in slices])
    assert stack.shape == (5, 20, 24, channels)
    for c in range(channels):  # each channel spans [0, 1] by its own percentiles, whatever its scale
        assert stack[..., c].max() == 1.0 and stack[..., c].min() == 0.0
        expected = display(image[..., c], 2)
        lo, hi = np.percentile(image[..., c], [0.5, 99.5])
        assert np.allclose(stack[2, ..., c], np.clip((expected - lo) / (hi - lo), 0, 1), atol=1e-6)
    manifest, images, masks, stored = convert_task(root, tmp_path / "slices", None, size=20)
    assert stored == channels and images.shape == (5, 20, 20, channels)
    from medseg.preprocess import model_input

    assert np.array_equal(images[2], model_input(slices[2].image, 20, channels))  # PNG round trip is exact
    assert masks.sum() == manifest["fg_pixels"].sum() > 0


def test_cases_with_different_channel_counts_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    label = np.zeros((8, 8, 2), np.uint8)
    root = write_task(tmp_path / "Task93", {"a": (rng.random((8, 8, 2)), label), "b": (rng.random((8, 8, 2, 2)), label)})
    with pytest.raises(MedsegError, match=r"Task93: cases differ in image channels \(1, 2; e\.g\. a: 1, b: 2\)"):
        convert_task(root, tmp_path / "slices", None, size=8)


def test_msd_dataset_runs_download_and_convert_from_a_local_task(make_phantom, tmp_path):
    """`dataset.name: msd` with `dataset.labels`, end to end through the stage scripts."""
    from tests.conftest import make_workdir, stage

    root, label = multilabel_phantom(make_phantom, tmp_path)
    work = make_workdir(tmp_path, {"dataset.name": "msd", "dataset.source": str(root), "dataset.labels": [1, 4]})
    for module in ("stages.download", "stages.convert"):
        result = stage(work, module)
        assert result.returncode == 0, result.stderr[-2000:]
    manifest = pd.read_csv(work / "data/slices/manifest.csv")
    assert manifest["fg_pixels"].sum() == np.isin(label, [1, 4]).sum()
    assert json.loads((work / "data/slices/info.json").read_text())["channels"] == 1


@pytest.mark.skipif(not BRATS_2013.is_dir(), reason="../shared/realdata/brats_multiclass is absent")
@pytest.mark.parametrize("region", list(BRATS_REGIONS))
def test_real_brats_2013_regions_convert_to_the_union_of_their_labels(tmp_path, region):
    """The real BraTS 2013 case laid out as an MSD task (FLAIR image, OTMultiClass label): each region's
    masks are the union of its labels in the source, at native size and resized as convert resizes."""
    import cv2

    root = tmp_path / "Task01_BraTS2013"
    for folder, name in (("imagesTr", "Flair_subtrMeanDivStd.nii.gz"), ("labelsTr", "OTMultiClass.nii.gz")):
        (root / folder).mkdir(parents=True)
        shutil.copy(BRATS_2013 / name, root / folder / "brats_0001.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR"}, "numTraining": 1, "labels": {
        "0": "background", "1": "necrosis", "2": "edema", "3": "non-enhancing tumour", "4": "enhancing tumour"}}))
    source = np.asarray(nib.as_closest_canonical(nib.load(root / "labelsTr" / "brats_0001.nii.gz")).dataobj)
    labels = BRATS_REGIONS[region]
    union = np.isin(source, labels)
    assert 0 < union.sum() < (source > 0).sum() or labels == [1, 2, 3, 4]
    expected = np.stack([display(union, k) for k in range(source.shape[2])])
    manifest, images, masks, _ = convert_task(root, tmp_path / "native", labels, size=240)
    assert masks.shape == expected.shape == (155, 240, 240)
    assert np.array_equal(masks.astype(bool), expected)
    assert manifest["fg_pixels"].sum() == union.sum()
    _, _, small, _ = convert_task(root, tmp_path / "small", labels, size=96)
    shares = np.stack([cv2.resize(m.astype(np.float32), (96, 96), interpolation=cv2.INTER_AREA) for m in expected])
    assert np.array_equal(small.astype(bool)[shares != 0.5], (shares > 0.5)[shares != 0.5])  # the majority of each pixel
    if region == "whole tumour":  # FLAIR shows the whole tumour (oedema included) bright
        k = int(np.argmax(expected.sum((1, 2))))
        flair = images[k, ..., 0]
        assert flair[expected[k]].mean() > flair[flair > 0].mean() + 40
