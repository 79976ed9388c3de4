"""fetch: local folders and archives land in data/raw as they ship, hostile archives and pickles are
refused with nothing written, the lung mirror becomes the Decathlon layout, and Kaggle failures
are one line that never shows the key."""
from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import stat
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg import fetch
from medseg.datasets.msd import list_cases, read_case
from medseg.errors import MedsegError
from medseg.fetch import archives, kaggle_api, pickles
from tests.conftest import reader

FAKE_KEY = "f4k3k3y0123456789abcdef0123456789"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------- local folder


def test_local_folder_is_linked_without_clutter_and_source_untouched(tmp_path):
    src = tmp_path / "src"
    (src / "kaggle_3m" / "TCGA_A").mkdir(parents=True)
    (src / "kaggle_3m" / "TCGA_A" / "TCGA_A_1.tif").write_bytes(b"image")
    (src / "kaggle_3m" / "._TCGA_A_1.tif").write_bytes(b"mac")
    (src / "__MACOSX" / "kaggle_3m").mkdir(parents=True)
    (src / "__MACOSX" / "kaggle_3m" / "x").write_bytes(b"mac")
    (src / ".keepkaggle").write_bytes(b"")
    (src / "Task").mkdir()
    (src / "Task" / "CT.zip").write_bytes(zip_bytes({"a.txt": b"A"}))
    before = snapshot(src)

    target = tmp_path / "raw" / "lgg"
    fetch.fetch_dataset("lgg", str(src), target)

    assert snapshot(src) == before
    got = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert got == ["Task/CT.zip", "Task/CT/a.txt", "kaggle_3m/TCGA_A/TCGA_A_1.tif"]
    copied = target / "kaggle_3m" / "TCGA_A" / "TCGA_A_1.tif"
    original = src / "kaggle_3m" / "TCGA_A" / "TCGA_A_1.tif"
    assert copied.read_bytes() == b"image"
    assert os.path.samefile(copied, original) or copied.stat().st_nlink == 1  # hard link, else a copy


def test_missing_source_names_the_params_key(tmp_path):
    with pytest.raises(MedsegError, match=r"dataset\.source=.*nowhere.*does not exist"):
        fetch.fetch_dataset("lgg", str(tmp_path / "nowhere"), tmp_path / "raw" / "lgg")


# ---------------------------------------------------------------- archives


def test_zip_with_nested_archive_is_kept_and_unpacked(tmp_path):
    inner = zip_bytes({"lung_001.nii": b"vol", ".keepkaggle": b"locked"})
    outer = tmp_path / "ds.zip"
    outer.write_bytes(zip_bytes({"Task006_Lung/CT.zip": inner, "Task006_Lung/meta.txt": b"m", "__MACOSX/._x": b"", "._y": b""}))

    target = tmp_path / "raw" / "lgg"
    fetch.fetch_dataset("lgg", str(outer), target)

    assert (target / "_archive" / "ds.zip").read_bytes() == outer.read_bytes()
    assert (target / "Task006_Lung" / "CT" / "lung_001.nii").read_bytes() == b"vol"
    assert (target / "Task006_Lung" / "CT.zip").exists()  # nested archive kept beside its folder
    assert not (target / "Task006_Lung" / "CT" / ".keepkaggle").exists()
    assert not (target / "__MACOSX").exists() and not (target / "._y").exists()


def test_tar_gz_with_nested_zip(tmp_path):
    archive = write_tar(tmp_path / "ds.tar.gz", {"top/readme.txt": b"r", "top/inner.zip": zip_bytes({"d/f.txt": b"F"})})
    dest = tmp_path / "out"
    written = archives.unpack_archive(archive, dest)
    assert (dest / "top" / "readme.txt").read_bytes() == b"r"
    assert (dest / "top" / "inner" / "d" / "f.txt").read_bytes() == b"F"
    assert dest / "top" / "inner" / "d" / "f.txt" in written


def test_duplicate_copy_is_logged(tmp_path, caplog):
    src = tmp_path / "src"
    for base in (src / "kaggle_3m", src / "lgg-mri-segmentation" / "kaggle_3m"):
        base.mkdir(parents=True)
        (base / "data.csv").write_text("x")
    with caplog.at_level(logging.INFO, logger="medseg.fetch"):
        fetch.fetch_dataset("lgg", str(src), tmp_path / "raw" / "lgg")
    assert "second copy of kaggle_3m" in caplog.text


def _zip_member(name: str, data: bytes = b"x", mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def _tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    "case",
    ["zip_parent", "zip_absolute", "zip_drive", "zip_backslash", "zip_symlink",
     "tar_symlink", "tar_hardlink", "tar_device", "tar_parent"],
)
def test_malicious_archive_is_refused_and_writes_nothing(tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    absolute = str(outside / "abs_evil.txt")
    dest = tmp_path / "dest"
    if case.startswith("zip"):
        name, mode, data = {
            "zip_parent": ("../evil.txt", None, b"x"),
            "zip_absolute": (absolute, None, b"x"),
            "zip_drive": ("C:/evil.txt", None, b"x"),
            "zip_backslash": ("..\\evil.txt", None, b"x"),
            "zip_symlink": ("link", stat.S_IFLNK | 0o777, str(outside).encode()),
        }[case]
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", b"benign first member")
            zf.writestr(_zip_member(name, mode=mode), data)
    else:
        name, member = {
            "tar_symlink": ("link", _tar_member("link", tarfile.SYMTYPE, str(outside))),
            "tar_hardlink": ("hard", _tar_member("hard", tarfile.LNKTYPE, "/etc/passwd")),
            "tar_device": ("dev", _tar_member("dev", tarfile.CHRTYPE)),
            "tar_parent": ("../evil.txt", _tar_member("../evil.txt", tarfile.REGTYPE)),
        }[case]
        archive = tmp_path / "bad.tar"
        with tarfile.open(archive, "w") as tf:
            ok = tarfile.TarInfo("ok.txt")
            ok.size = 3
            tf.addfile(ok, io.BytesIO(b"abc"))
            tf.addfile(member, io.BytesIO(b""))
            if case == "tar_symlink":
                escape = tarfile.TarInfo("link/escaped.txt")
                escape.size = 3
                tf.addfile(escape, io.BytesIO(b"bad"))
    before = sorted(p.name for p in tmp_path.rglob("*"))

    with pytest.raises(MedsegError) as err:
        archives.unpack_archive(archive, dest)

    assert str(archive) in str(err.value) and repr(name) in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name != "dest") == before
    assert list(dest.rglob("*")) == []  # refused before any member was written
    assert list(outside.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------- restricted unpickler


class _Pwn:
    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.flag}",))


def test_numpy_pickles_load_in_all_protocols(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for protocol in (2, 4, 5):
        path = tmp_path / f"a{protocol}.pkl.gz"
        path.write_bytes(gzip.compress(pickle.dumps({"gt": arr, "spacing": np.float32(1.5)}, protocol=protocol)))
        loaded = pickles.load_array_pickle(path)
        assert np.array_equal(loaded["gt"], arr) and loaded["spacing"] == np.float32(1.5)


def test_pickle_calling_os_system_is_refused(tmp_path):
    flag = tmp_path / "FILE"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Pwn(flag)))
    with pytest.raises(MedsegError, match=r"evil\.pkl: refused to unpickle (posix|os|nt)\.system \(only numpy arrays"):
        pickles.load_array_pickle(path)
    assert not flag.exists()


@pytest.mark.parametrize(
    "obj, expect_ok",
    [
        (np.ones((2, 2, 2)), True),
        ((np.ones((2, 2, 2)), np.array([1.0, 1.0, 2.5])), True),  # evalseg's (data, voxelsize)
        ({"mask": np.ones((2, 2, 2)), "other": np.zeros((2, 2, 2))}, True),
        ({"a": np.ones((2, 2, 2)), "b": np.zeros((2, 2, 2))}, False),
        ("just text", False),
    ],
)
def test_label_array_structures(tmp_path, obj, expect_ok):
    if expect_ok:
        assert pickles.label_array(obj, tmp_path / "x.pkl").shape == (2, 2, 2)
    else:
        with pytest.raises(MedsegError, match=r"x\.pkl: no single label array found in"):
            pickles.label_array(obj, tmp_path / "x.pkl")


def test_evalseg_segment_array_pickle_becomes_dense(tmp_path, monkeypatch):
    """The mirror's labels may be evalseg SegmentArray objects: read as inert stand-ins, densified."""
    module = types.ModuleType("evalseg.io.segment_array")
    seg_cls = type("SegmentArray", (), {"__module__": module.__name__})
    part_cls = type("SingleSegment", (), {"__module__": module.__name__})
    module.SegmentArray, module.SingleSegment = seg_cls, part_cls
    for parent in ("evalseg", "evalseg.io"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    part = part_cls()
    part.__dict__.update(data=np.ones((2, 2, 1), np.uint8), roi=(slice(1, 3), slice(0, 2), slice(3, 4)), shape=(4, 4, 5))
    seg = seg_cls()
    seg.__dict__.update(dtype=np.dtype(np.uint8), shape=(4, 4, 5), fill_value=0, segments=[part], voxelsize=np.ones(3))
    path = tmp_path / "seg.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(seg, protocol=4)))

    dense = pickles.label_array(pickles.load_array_pickle(path), path)
    assert dense.shape == (4, 4, 5) and dense.sum() == 4 and dense[1:3, 0:2, 3].all()


# ---------------------------------------------------------------- lung mirror -> Decathlon


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    return img.to_bytes()


def _lung_mirror(tmp_path: Path, label_shape: tuple[int, int, int] = (8, 8, 4)) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    volumes, labels = {}, {}
    for case in ("lung_001", "lung_002"):
        vol = rng.integers(-1000, 400, size=(8, 8, 4)).astype(np.int16)
        lab = np.zeros(label_shape, np.uint8)
        lab[2:5, 3:6, 1:3] = 1
        volumes[f"{case}.nii"] = _nifti_bytes(vol, affine)
        labels[case] = lab
    ct_zip = zip_bytes({**volumes, ".keepkaggle": b""})
    members = {"Task006_Lung/CT.zip": ct_zip}
    members["Task006_Lung/GroundTruth/lung_001.pkl.gz"] = gzip.compress(pickle.dumps(labels["lung_001"]))
    members["Task006_Lung/GroundTruth/lung_002.pkl.gz"] = gzip.compress(
        pickle.dumps((labels["lung_002"], np.array([0.8, 0.8, 2.5])), protocol=5)
    )
    archive = tmp_path / "medical-image-segmentation.zip"
    archive.write_bytes(zip_bytes(members))
    return archive, labels


def test_lung_mirror_becomes_decathlon_layout(tmp_path):
    archive, labels = _lung_mirror(tmp_path)
    target = tmp_path / "raw" / "lung"
    fetch.fetch_dataset("lung", str(archive), target)

    root = target / "Task06_Lung"
    cases = list_cases(target)
    assert [c.case_id for c in cases] == ["lung_001", "lung_002"]
    image = nib.load(root / "imagesTr" / "lung_001.nii.gz")
    label = nib.load(root / "labelsTr" / "lung_001.nii.gz")
    assert np.allclose(image.affine, label.affine) and np.allclose(image.affine, np.diag([-0.8, -0.8, 2.5, 1.0]))
    assert np.array_equal(np.asarray(label.dataobj), labels["lung_001"])
    slices = list(read_case(cases[1], reader()))
    assert len(slices) == 4 and sum(int(s.mask.sum()) for s in slices) == int(labels["lung_002"].sum())
    assert '"CT"' in (root / "dataset.json").read_text()


def test_lung_label_shape_mismatch_names_both_files(tmp_path):
    archive, _ = _lung_mirror(tmp_path, label_shape=(8, 8, 3))
    with pytest.raises(MedsegError, match=r"lung_001\.pkl\.gz: label shape \(8, 8, 3\) differs from image .*lung_001\.nii"):
        fetch.fetch_dataset("lung", str(archive), tmp_path / "raw" / "lung")


# ---------------------------------------------------------------- Kaggle


@pytest.fixture
def no_kaggle_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key in [k for k in os.environ if k.startswith("KAGGLE_")] + ["XDG_CONFIG_HOME"]:
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def test_importing_fetch_does_not_import_kaggle():
    code = "import sys, medseg.fetch; sys.exit('kaggle' in sys.modules)"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], env=env).returncode == 0


def test_kaggle_without_credentials_is_one_line(no_kaggle_env, capsys):
    with pytest.raises(MedsegError) as err:
        fetch.fetch_dataset("lgg", "kaggle", no_kaggle_env / "raw" / "lgg")
    text = str(err.value)
    assert "\n" not in text and "kaggle.json" in text and "KAGGLE_KEY" in text and "dataset.source=" in text
    assert capsys.readouterr().out == ""


def _assert_key_hidden(err: pytest.ExceptionInfo, capsys, caplog) -> None:
    out = capsys.readouterr()
    for text in (str(err.value), repr(err.value), out.out, out.err, caplog.text):
        assert FAKE_KEY not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no traceback can leak it


@pytest.fixture
def fake_key(no_kaggle_env, monkeypatch, caplog):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    return no_kaggle_env


def _patch_download(monkeypatch, behaviour) -> None:
    api_class = kaggle_api._kaggle_api_class()
    monkeypatch.setattr(api_class, "dataset_download_files", behaviour)


def test_kaggle_rejected_key_is_reported_without_the_key(fake_key, monkeypatch, capsys, caplog):
    import requests

    def reject(self, slug, path=None, **kwargs):
        print(f"debug noise with {FAKE_KEY}")
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError(f"401 Client Error: Unauthorized (key={FAKE_KEY})", response=response)

    _patch_download(monkeypatch, reject)
    with pytest.raises(MedsegError, match=r"credentials rejected \(HTTP 401\).*kaggle\.json.*dataset\.source=") as err:
        fetch.fetch_dataset("lgg", "kaggle", fake_key / "raw" / "lgg")
    assert "\n" not in str(err.value)
    _assert_key_hidden(err, capsys, caplog)


def test_kaggle_unexpected_error_text_is_scrubbed(fake_key, monkeypatch, capsys, caplog):
    def explode(self, slug, path=None, **kwargs):
        raise ValueError(f"weird failure mentioning {FAKE_KEY}")

    _patch_download(monkeypatch, explode)
    with pytest.raises(MedsegError, match=r"ValueError: weird failure mentioning \*\*\*") as err:
        fetch.fetch_dataset("lgg", "kaggle", fake_key / "raw" / "lgg")
    _assert_key_hidden(err, capsys, caplog)


def test_kaggle_network_failure_is_reported_without_the_key(fake_key, monkeypatch, capsys, caplog):
    import requests

    def offline(self, slug, path=None, **kwargs):
        raise requests.ConnectionError(f"Failed to resolve 'api.kaggle.com' {FAKE_KEY}")

    _patch_download(monkeypatch, offline)
    with pytest.raises(MedsegError, match=r"no network \(ConnectionError\).*dataset\.source=") as err:
        fetch.fetch_dataset("lgg", "kaggle", fake_key / "raw" / "lgg")
    _assert_key_hidden(err, capsys, caplog)


def test_kaggle_real_call_fails_cleanly_without_the_key(fake_key, capsys, caplog):
    """Unpatched: offline this is a network error, online Kaggle rejects the fake key (401)."""
    with pytest.raises(MedsegError, match=r"lgg-mri-segmentation: (no network|credentials rejected)") as err:
        fetch.fetch_dataset("lgg", "kaggle", fake_key / "raw" / "lgg")
    _assert_key_hidden(err, capsys, caplog)


def test_kaggle_download_keeps_archive_and_unpacks(fake_key, monkeypatch):
    def download(self, slug, path=None, **kwargs):
        print("Dataset URL: https://www.kaggle.com/datasets/" + slug)
        Path(path, slug.split("/")[1] + ".zip").write_bytes(zip_bytes({"kaggle_3m/data.csv": b"id"}))

    _patch_download(monkeypatch, download)
    target = fake_key / "raw" / "lgg"
    fetch.fetch_dataset("lgg", "kaggle", target)
    assert (target / "_archive" / "lgg-mri-segmentation.zip").is_file()
    assert (target / "kaggle_3m" / "data.csv").read_bytes() == b"id"
