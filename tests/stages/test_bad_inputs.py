"""Bad input, end to end: each case runs the real stage script as a subprocess in a scratch working
folder and checks what a user sees and what is left on disk.

The contract: exit status 2, stderr's last line is the only `error: ` line and names the file (or
params key) and the problem, no traceback, and the working folder exactly as it was (the stage's
output absent, or the previous one untouched, no temp folder left behind). The reader-level unit
tests (test_lgg, test_isic, test_siim, test_msd, test_fetch) check the messages in detail; this
suite checks that they reach the user through `run_stage` and that nothing half-written remains.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from models import build_model
from tests.conftest import REALDATA, STAGE_PHANTOM, make_workdir, stage

BRATS = REALDATA / "brats_multiclass" / "brats_2013_pat0001_1"
LGG_PATIENT = "kaggle_3m/TCGA_PH_0002_20000101"
ISIC_IN, ISIC_TRUTH = "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"
KAGGLE_SECRET = "secret123abc"


# ---------------------------------------------------------------- helpers


def put_old_outputs(work: Path) -> None:
    """Outputs of an earlier successful run, which a failed stage must leave as they are."""
    (work / "data/slices/images").mkdir(parents=True)
    (work / "data/slices/manifest.csv").write_text("slice_id\nold_0000\n")
    (work / "data/slices/images/old_0000.png").write_bytes(b"old image")
    (work / "results/convert").mkdir(parents=True)
    (work / "results/convert/metrics.json").write_text('{"old": true}\n')


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (hidden ones included) with its bytes; None for folders."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one `error:` line, last, holding every needle; no traceback. Returns that line."""
    tail = result.stderr[-3000:]
    assert result.returncode == 2, f"exit {result.returncode}:\n{tail}"
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), tail
    assert sum(line.startswith("error: ") for line in lines) == 1, tail
    assert "Traceback" not in result.stderr, tail
    for needle in needles:
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    return lines[-1]


def refused_and_untouched(work: Path, module: str, *needles: str, args: tuple[str, ...] = (),
                          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the stage, check it refused, and that the working folder is byte for byte as before."""
    before = tree(work)
    result = stage(work, module, *args, env=env)
    assert_refused(result, *needles)
    assert tree(work) == before
    return result


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def phantoms(make_phantom) -> Callable[[str], Path]:
    """Pristine phantom raw folders by dataset name (STAGE_PHANTOM sizes), written once, copied by `put_raw`."""
    return lambda name: make_phantom(name, **STAGE_PHANTOM)


def put_raw(work: Path, phantoms: Callable[[str], Path], name: str) -> Path:
    raw = work / "data/raw" / name
    shutil.copytree(phantoms(name), raw)
    return raw


def convert_workdir(tmp_path: Path, phantoms: Callable[[str], Path], name: str,
                    edits: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """(work, raw): a working folder with phantom `name` in data/raw and old convert outputs."""
    work = make_workdir(tmp_path, {"dataset.name": name, **(edits or {})})
    raw = put_raw(work, phantoms, name)
    put_old_outputs(work)
    return work, raw


# ---------------------------------------------------------------- (1) params


def test_bad_loss_type_stops_train_before_reading_data(tmp_path):
    work = make_workdir(tmp_path, {"loss.type": "nonsense"})
    refused_and_untouched(work, "stages.train", "params.yaml: loss.type='nonsense' is not allowed",
                          "dice_bce", args=("unet",))
    assert not (work / "data").exists() and not (work / "results").exists()


def test_unknown_key_stops_convert(tmp_path, phantoms):
    work, _ = convert_workdir(tmp_path, phantoms, "phantom", {"convert.sise": 32})
    refused_and_untouched(work, "stages.convert", "params.yaml: unknown key convert.sise", "known keys")


# ---------------------------------------------------------------- (2)-(9) convert on broken raw data


def _truncate_first(pattern: str, index: int = 1) -> Callable[[Path], str]:
    def damage(raw: Path) -> str:
        path = sorted(raw.glob(pattern))[index]
        truncate(path)
        return str(path.relative_to(raw.parents[2]))
    return damage


def _resize_lgg_mask(raw: Path) -> str:
    mask = raw / LGG_PATIENT / "TCGA_PH_0002_20000101_2_mask.tif"
    cv2.imwrite(str(mask), np.zeros((7, 9), np.uint8))
    return f"{mask.relative_to(raw.parents[2])}: mask size (7, 9) differs from image size (32, 32)"


def _grey_isic_mask(raw: Path) -> str:
    mask = raw / ISIC_TRUTH / "ISIC_0000001_segmentation.png"
    values = np.zeros((cv2.imread(str(mask)).shape[:2]), np.uint8)
    values[:5], values[5:10] = 255, 128  # a resampled edge
    cv2.imwrite(str(mask), values)
    return f"{mask.relative_to(raw.parents[2])}: mask values 0, 128, 255 are not binary"


def _multilabel_nifti(raw: Path) -> str:
    path = raw / "labelsTr/phantom_001.nii.gz"
    img = nib.load(path)
    label = np.zeros(img.shape, np.uint8)
    label[2:6, 2:6, :] = 1
    label[8:10, 8:10, :2] = 2
    label[12:14, 12:14, 1:] = 4
    nib.save(nib.Nifti1Image(label, img.affine), path)
    return f"{path.relative_to(raw.parents[2])}: labels 0, 1, 2, 4 found"


def _drop(rel: str) -> Callable[[Path], str]:
    def damage(raw: Path) -> str:
        (raw / rel).unlink()
        return ""
    return damage


def _edit_rle(rle: str) -> Callable[[Path], str]:
    """Give the first CSV row the RLE `rle` (an odd count is refused on listing, an overrun on reading)."""
    def damage(raw: Path) -> str:
        csv = raw / "train-rle.csv"
        lines = csv.read_text().splitlines()
        image_id = lines[1].split(",")[0]
        lines[1] = f"{image_id}, {rle}"
        csv.write_text("\n".join(lines) + "\n")
        return f"ImageId {image_id}"
    return damage


def _duplicate_isic_id(raw: Path) -> str:
    shutil.copy(raw / ISIC_IN / "ISIC_0000001.jpg", raw / ISIC_IN / "ISIC_0000001.JPG")
    return "duplicate id ISIC_0000001 (also ISIC_0000001.JPG)"


def _empty_images(raw: Path) -> str:
    for folder in ("imagesTr", "labelsTr"):
        for path in (raw / folder).iterdir():
            path.unlink()
    return "data/raw/phantom/imagesTr: no NIfTI images found"


BROKEN_RAW = {
    # id: (dataset, damage(raw) -> extra needle, needles, param edits)
    "truncated_jpg_isic": ("phantom_isic", _truncate_first(f"{ISIC_IN}/*.jpg"),
                           ("ISIC_0000001.jpg: cannot read image", "truncated JPEG"), {}),
    "truncated_tif_lgg": ("phantom_lgg", _truncate_first(f"{LGG_PATIENT}/*_3.tif", 0),
                          ("TCGA_PH_0002_20000101_3.tif: cannot read image",), {}),
    "truncated_dicom_siim": ("phantom_siim", _truncate_first("dicom-images-train/*/*/*.dcm"),
                             (".dcm: cannot read DICOM",), {}),
    "truncated_nifti_msd_pool": ("phantom", _truncate_first("imagesTr/*.nii.gz"),
                                 ("phantom_001.nii.gz: cannot read NIfTI",), {"convert.workers": 2}),
    "mask_size_lgg": ("phantom_lgg", _resize_lgg_mask, (), {}),
    "mask_values_isic": ("phantom_isic", _grey_isic_mask, ("expected 0/255 or 0/1",), {}),
    "multilabel_nifti": ("phantom", _multilabel_nifti,
                         ("only 0/1 labels are supported", "set dataset.labels to the values that form the foreground"), {}),
    "image_without_mask_lgg": ("phantom_lgg", _drop(f"{LGG_PATIENT}/TCGA_PH_0002_20000101_2_mask.tif"),
                               ("TCGA_PH_0002_20000101_2.tif: no mask file TCGA_PH_0002_20000101_2_mask.tif",), {}),
    "mask_without_image_isic": ("phantom_isic", _drop(f"{ISIC_IN}/ISIC_0000002.jpg"),
                                ("ISIC_0000002_segmentation.png: mask without image file ISIC_0000002.jpg",), {}),
    "rle_odd_count": ("phantom_siim", _edit_rle("1 2 3"),
                      ("train-rle.csv: line 2", "odd number of values (3)"), {}),
    "rle_past_image": ("phantom_siim", _edit_rle("0 5000"),
                       ("train-rle.csv", "runs past the image end (pixel 5000 of 32x32 = 1024)"), {}),
    "duplicate_id_isic": ("phantom_isic", _duplicate_isic_id, ("keep one file per id",), {}),
    "no_images_msd": ("phantom", _empty_images, (), {}),
}


@pytest.mark.parametrize("case", list(BROKEN_RAW))
def test_broken_raw_data_stops_convert_and_keeps_old_slices(tmp_path, phantoms, case):
    dataset, damage, needles, edits = BROKEN_RAW[case]
    work, raw = convert_workdir(tmp_path, phantoms, dataset, edits)
    extra = damage(raw)
    result = refused_and_untouched(work, "stages.convert", *needles, *([extra] if extra else []))
    assert "data/raw/" in result.stderr.splitlines()[-1]  # names the file, relative to the working folder


@pytest.mark.skipif(not BRATS.is_dir(), reason="../shared/realdata/brats_multiclass is absent")
def test_real_multiclass_brats_label_is_refused(tmp_path):
    work = make_workdir(tmp_path)
    raw = work / "data/raw/phantom"
    for folder, name in (("imagesTr", "Flair_subtrMeanDivStd.nii.gz"), ("labelsTr", "OTMultiClass.nii.gz")):
        (raw / folder).mkdir(parents=True)
        shutil.copy(BRATS / name, raw / folder / "brats_0001.nii.gz")
    put_old_outputs(work)
    refused_and_untouched(work, "stages.convert",
                          "data/raw/phantom/labelsTr/brats_0001.nii.gz: labels 0, 1, 2, 3, 4 found",
                          "set dataset.labels to the values that form the foreground, e.g. [1, 2, 3, 4]")


# ---------------------------------------------------------------- convert.on_error


@pytest.mark.parametrize("workers", [1, 2])
def test_on_error_skip_leaves_out_the_unreadable_case(tmp_path, phantoms, workers):
    """Slice 3 of patient 0002 is cut short: slices 1-2 were already written and must go again."""
    work, raw = convert_workdir(tmp_path, phantoms, "phantom_lgg",
                                {"convert.on_error": "skip", "convert.workers": workers})
    truncate(raw / LGG_PATIENT / "TCGA_PH_0002_20000101_3.tif")
    result = stage(work, "stages.convert")
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = pd.read_csv(work / "results/convert/skipped.csv")
    assert list(skipped.columns) == ["case_id", "source", "error"]
    assert skipped["case_id"].tolist() == ["TCGA_PH_0002_20000101"]
    assert skipped["source"].tolist() == [LGG_PATIENT]
    assert "TCGA_PH_0002_20000101_3.tif: cannot read image" in skipped["error"].iloc[0]
    metrics = json.loads((work / "results/convert/metrics.json").read_text())
    assert metrics["skipped_cases"] == 1 and metrics["cases"] == 2 and metrics["groups"] == 2
    manifest = pd.read_csv(work / "data/slices/manifest.csv", dtype=str)
    assert set(manifest["group"]) == {"TCGA_PH_0001_20000101", "TCGA_PH_0003_20000101"}
    for folder in ("images", "masks"):
        names = {p.stem for p in (work / "data/slices" / folder).iterdir()}
        assert names == set(manifest["slice_id"])  # nothing of the skipped case, nothing old
    assert sorted(p.name for p in (work / "data").iterdir()) == ["raw", "slices"]


def test_on_error_skip_with_every_case_unreadable(tmp_path, phantoms):
    work, raw = convert_workdir(tmp_path, phantoms, "phantom_isic", {"convert.on_error": "skip"})
    for image in (raw / ISIC_IN).glob("*.jpg"):
        truncate(image)
    refused_and_untouched(work, "stages.convert", "data/raw/phantom_isic: no readable cases (3 skipped; first:",
                          "ISIC_0000000.jpg: cannot read image")


def test_clean_convert_writes_header_only_skipped_csv(tmp_path, phantoms):
    work, _ = convert_workdir(tmp_path, phantoms, "phantom_isic")
    result = stage(work, "stages.convert")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "results/convert/skipped.csv").read_text() == "case_id,source,error\n"
    assert json.loads((work / "results/convert/metrics.json").read_text())["skipped_cases"] == 0


# ---------------------------------------------------------------- (10) split without positives


def test_split_with_foreground_in_one_group_only(tmp_path):
    work = make_workdir(tmp_path)
    slices = work / "data/slices"
    slices.mkdir(parents=True)
    rows = [{"slice_id": f"g{g}_{k:04d}", "group": f"g{g}", "source": f"g{g}.nii.gz", "index": k,
             "fg_pixels": 50 if g == 0 and k == 1 else 0, "spacing": "", "height": 32, "width": 32,
             "pixel_hash": ""} for g in range(5) for k in range(3)]
    pd.DataFrame(rows).to_csv(slices / "manifest.csv", index=False)
    (work / "data/split.csv").write_text("slice_id,split,group\nold,train,old\n")
    refused_and_untouched(work, "stages.split", "no group with foreground lands in",
                          "1 positive groups of 5", "split.fractions")


# ---------------------------------------------------------------- (11), (12), (14) download


def _download_workdir(tmp_path: Path, name: str, source: str) -> Path:
    work = make_workdir(tmp_path, {"dataset.name": name, "dataset.source": source})
    (work / "data/raw/old").mkdir(parents=True)
    (work / "data/raw/old/kept.txt").write_text("an earlier download")
    return work


def test_archive_member_escaping_the_target_is_refused(tmp_path):
    archive = tmp_path / "lgg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("kaggle_3m/data.csv", b"Patient\n")
        zf.writestr("../../../evil.txt", b"escaped")
    work = _download_workdir(tmp_path, "lgg", str(archive))
    refused_and_untouched(work, "stages.download", f"{archive}: refused member '../../../evil.txt'",
                          "points outside the destination folder")
    assert not list(tmp_path.rglob("evil.txt"))


class _Payload:
    """Pickles as a call to os.system that would create `flag`."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_lung_mirror_pickle_that_runs_code_is_refused(tmp_path):
    """The Kaggle lung mirror's GroundTruth/*.pkl labels go through the restricted unpickler."""
    flag = tmp_path / "PWNED"
    task = tmp_path / "mirror/Task06_Lung"
    (task / "CT").mkdir(parents=True)
    (task / "GroundTruth").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), task / "CT/lung_001.nii.gz")
    (task / "GroundTruth/lung_001.pkl").write_bytes(pickle.dumps(_Payload(flag)))
    work = _download_workdir(tmp_path, "lung", str(tmp_path / "mirror"))
    refused_and_untouched(work, "stages.download", f"{task}/GroundTruth/lung_001.pkl: refused to unpickle",
                          "system", "only numpy arrays and plain containers are allowed")
    assert not flag.exists()


def _kaggle_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """os.environ without any Kaggle credential, HOME an empty folder, plus `extra`."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and k != "XDG_CONFIG_HOME"}
    return {**env, "HOME": str(home), **extra}


def test_kaggle_without_credentials(tmp_path):
    work = _download_workdir(tmp_path, "lgg", "kaggle")
    refused_and_untouched(work, "stages.download", "no credentials found", "kaggle.json", "KAGGLE_KEY",
                          "dataset.source=", env=_kaggle_env(tmp_path))


def test_kaggle_key_never_shown(tmp_path):
    """Offline this fails as a network error, online as a rejected key: either way one line, no key."""
    work = _download_workdir(tmp_path, "lgg", "kaggle")
    env = _kaggle_env(tmp_path, KAGGLE_USERNAME="x", KAGGLE_KEY=KAGGLE_SECRET)
    result = refused_and_untouched(work, "stages.download", "Kaggle download of mateuszbuda/lgg-mri-segmentation",
                                   env=env)
    assert KAGGLE_SECRET not in result.stdout and KAGGLE_SECRET not in result.stderr


# ---------------------------------------------------------------- (2) and (13) predict


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """The stage tests' tiny U-Net checkpoint (tests/stages/conftest.py)."""
    return tiny_checkpoint


def test_truncated_png_among_good_ones_leaves_out_folder_as_it_was(tmp_path, checkpoint):
    work = make_workdir(tmp_path)
    source = work / "in"
    source.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    cv2.imwrite(str(source / "a_good.png"), image)
    cv2.imwrite(str(source / "b_cut.png"), image)
    truncate(source / "b_cut.png")
    (work / "out").mkdir()
    (work / "out/keep.txt").write_text("the user's own file")
    refused_and_untouched(work, "stages.predict", "in/b_cut.png: cannot read image",
                          args=("--model", str(checkpoint), "--source", "in", "--out", "out"))


def _plain_dict(path: Path, flag: Path) -> None:
    torch.save({"state_dict": build_model("unet", 1, width=4).state_dict(), "epoch": 3}, path)


def _random_bytes(path: Path, flag: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _malicious_pickle(path: Path, flag: Path) -> None:
    path.write_bytes(pickle.dumps({"format": "medseg-checkpoint-v1", "model": _Payload(flag)}))


def _malicious_torch_save(path: Path, flag: Path) -> None:
    torch.save({"format": "medseg-checkpoint-v1", "model": _Payload(flag)}, path)


@pytest.mark.parametrize("write, needle", [
    (_plain_dict, "not a medseg checkpoint"),
    (_random_bytes, "not a loadable checkpoint"),
    (_malicious_pickle, "not a loadable checkpoint (UnpicklingError)"),
    (_malicious_torch_save, "not a loadable checkpoint (UnpicklingError)"),
], ids=["plain_dict", "random_bytes", "malicious_pickle", "malicious_torch_save"])
def test_foreign_checkpoint_is_refused_and_never_runs(tmp_path, write, needle):
    flag = tmp_path / "PWNED"
    work = make_workdir(tmp_path)
    write(work / "model.pt", flag)
    cv2.imwrite(str(work / "x.png"), np.zeros((16, 16), np.uint8))
    refused_and_untouched(work, "stages.predict", f"model.pt: {needle}",
                          args=("--model", "model.pt", "--source", "x.png", "--out", "out"))
    assert not flag.exists() and not (work / "out").exists()
