"""Put a real dataset under data/raw/<name>/ as it ships, from Kaggle or from a local folder/archive.

Why this module is careful: everything it reads is untrusted input. Every archive goes through one
unpacker that refuses members landing outside the destination and never creates links or devices;
the one pickled format we meet (the Kaggle lung mirror's labels) is read by an unpickler that only
builds numpy arrays and plain containers; the kaggle package is imported late, muted, and its output
is scrubbed, because it prints a sign-in notice on import and the API key must never be shown.
"""
from __future__ import annotations

import codecs
import collections
import contextlib
import gzip
import importlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np

from medseg.datasets import DATASETS
from medseg.datasets.files import is_clutter
from medseg.errors import MedsegError
from medseg.outputs import write_json

log = logging.getLogger("medseg.fetch")

KAGGLE_SLUGS = {
    "lgg": "mateuszbuda/lgg-mri-segmentation",
    "siim": "jesperdramsch/siim-acr-pneumothorax-segmentation-data",
    "isic": "tschandl/isic2018-challenge-task1-data-segmentation",
    "lung": "modaresimr/medical-image-segmentation",
}
ARCHIVE_DIR = "_archive"  # the downloaded/copied archive is kept here; it unpacks beside it
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_NESTING = 4
LOCAL_HINT = "use a local folder instead: dvc exp run -S dataset.source=/path/to/folder"
CREDENTIALS_HINT = (
    "provide credentials in ~/.kaggle/kaggle.json (chmod 600) or as KAGGLE_USERNAME and KAGGLE_KEY "
    f"(or KAGGLE_API_TOKEN), or {LOCAL_HINT}"
)
DECATHLON_DIRS = {"lung": "Task06_Lung"}
LABEL_KEYS = ("label", "labels", "mask", "gt", "seg", "segmentation")
_DRIVE = re.compile(r"^[A-Za-z]:")


def fetch_dataset(name: str, source: str, target: Path) -> None:
    """Fill `target` with dataset `name` from `source` ('kaggle' or a local folder/archive)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if source == "kaggle":
        _from_kaggle(name, target)
        _finish_layout(name, target)
        return
    local = Path(source).expanduser()
    try:
        _from_local(local, target)
        _finish_layout(name, target)
    except MedsegError as err:
        raise _named_by_source(err, local, target) from err


def _finish_layout(name: str, target: Path) -> None:
    _note_duplicate_copies(target)
    _convert_task_layout(name, target)


def _named_by_source(err: MedsegError, source: Path, target: Path) -> MedsegError:
    """The error with files named where the user has them: `target` is the download stage's temp
    folder, removed on failure. A folder's copy mirrors it; an archive's members read archive.zip/member."""
    text = str(err).replace(str(target / ARCHIVE_DIR / source.name), str(source))
    return MedsegError(text.replace(f"{target}/", f"{source}/"))


# ---------------------------------------------------------------- local folder or archive


def _from_local(source: Path, target: Path) -> None:
    if not source.exists():
        raise MedsegError(
            f"params.yaml: dataset.source={str(source)!r} does not exist (give 'kaggle' or a local folder/archive)"
        )
    if source.is_dir():
        if target.resolve().is_relative_to(source.resolve()):
            raise MedsegError(
                f"params.yaml: dataset.source={str(source)!r} contains the output folder {target}; "
                "pick the dataset folder itself"
            )
        linked, copied = _link_tree(source, target)
        log.info("%s: %d files hard-linked, %d copied into %s", source, linked, copied, target)
        for archive in sorted(p for p in target.rglob("*") if _is_archive(p)):
            if ARCHIVE_DIR not in archive.relative_to(target).parts:
                _unpack_nested(archive, depth=1)
    elif _is_archive(source):
        kept = target / ARCHIVE_DIR / source.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, kept)
        unpack_archive(kept, target)
    else:
        kinds = "/".join(ARCHIVE_SUFFIXES)
        raise MedsegError(f"params.yaml: dataset.source={str(source)!r} is neither a folder nor a {kinds} archive")


def _link_tree(source: Path, target: Path) -> tuple[int, int]:
    """Mirror `source` into `target` without touching it: hard links where possible, else copies."""
    linked = copied = 0
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        for d in [d for d in dirs if is_clutter(d) or (here / d).is_symlink()]:
            dirs.remove(d)
            if not is_clutter(d):
                log.warning("%s: skipping symlinked folder", here / d)
        out = target / here.relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = here / name
            if is_clutter(name) or not path.is_file():  # clutter, broken links, sockets, devices
                continue
            if _link_or_copy(path.resolve(), out / name):
                linked += 1
            else:
                copied += 1
    return linked, copied


def _link_or_copy(src: Path, dst: Path) -> bool:
    """True if `dst` became a hard link of `src`, False if it had to be copied."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


# ---------------------------------------------------------------- safe unpacking


def unpack_archive(archive: Path, dest: Path) -> list[Path]:
    """Unpack a zip or tar into `dest`, then each archive inside it into a folder beside it.

    No member may land outside `dest`; links and devices are refused, never created. Returns the
    files written (nested ones included)."""
    return _unpack_tree(Path(archive), Path(dest), depth=0)


def _unpack_tree(archive: Path, dest: Path, depth: int) -> list[Path]:
    written = _unpack_one(archive, dest)
    log.info("unpacked %s: %d files", archive.name, len(written))
    for path in list(written):
        if _is_archive(path):
            written += _unpack_nested(path, depth + 1)
    return written


def _unpack_nested(archive: Path, depth: int) -> list[Path]:
    """Unpack an archive found inside the dataset into a folder beside it named after it."""
    folder = archive.with_name(_strip_archive_suffix(archive.name))
    if folder.exists():
        log.info("%s: %s/ already exists, leaving the archive as it is", archive, folder.name)
        return []
    if depth > MAX_NESTING:
        raise MedsegError(f"{archive}: archives nested more than {MAX_NESTING} deep; refusing to unpack further")
    folder.mkdir()
    return _unpack_tree(archive, folder, depth)


def _strip_archive_suffix(name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unpack_one(archive: Path, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _unpack_zip(archive, dest)
        if tarfile.is_tarfile(archive):
            return _unpack_tar(archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, RuntimeError, NotImplementedError, EOFError, OSError) as err:
        raise MedsegError(f"{archive}: cannot unpack ({type(err).__name__}: {err})".splitlines()[0]) from err
    raise MedsegError(f"{archive}: not a zip or tar archive")


def _unpack_zip(archive: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        plan = [(info, _member_path(archive, info.filename, dest)) for info in zf.infolist()]
        plan = [(info, out) for info, out in plan if out is not None]
        for info, _ in plan:
            _check_zip_type(archive, info)
        written = []
        for info, out in plan:
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                written.append(_write_member(src, out))
    return written


def _check_zip_type(archive: Path, info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16  # Unix mode bits, 0 for archives made on Windows
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise _refused(archive, info.filename, "is a symbolic link")
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise _refused(archive, info.filename, "is a device, fifo or socket")


def _unpack_tar(archive: Path, dest: Path) -> list[Path]:
    with tarfile.open(archive) as tf:
        plan = [(m, _member_path(archive, m.name, dest)) for m in tf.getmembers()]
        plan = [(m, out) for m, out in plan if out is not None]
        for member, _ in plan:
            _check_tar_type(archive, member)
        written = []
        for member, out in plan:
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            assert src is not None  # regular files only, checked above
            with src:
                written.append(_write_member(src, out))
    return written


def _check_tar_type(archive: Path, member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk():
        raise _refused(archive, member.name, f"is a link to {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise _refused(archive, member.name, "is a device, fifo or other special file")


def _member_path(archive: Path, name: str, dest: Path) -> Path | None:
    """Where member `name` lands inside `dest`; None for clutter. Refuses any path out of `dest`."""
    clean = name.replace("\\", "/")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if clean.startswith("/") or _DRIVE.match(clean) or ".." in parts:
        raise _refused(archive, name, "points outside the destination folder")
    if not parts or any(is_clutter(p) for p in parts):
        return None
    out = dest.joinpath(*parts)
    if not out.resolve().is_relative_to(dest.resolve()):
        raise _refused(archive, name, "resolves outside the destination folder")
    return out


def _write_member(src: IO[bytes], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() or out.is_symlink():
        out.unlink()  # never write through a symlink or into a hard-linked source file
    with open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _refused(archive: Path, member: str, why: str) -> MedsegError:
    return MedsegError(f"{archive}: refused member {member!r} ({why}); nothing from this archive was unpacked")


def _note_duplicate_copies(target: Path) -> None:
    """Log second copies that archives carry (LGG lgg-mri-segmentation/kaggle_3m, SIIM pneumothorax/)."""
    top = {p.name: p for p in target.iterdir() if p.name != ARCHIVE_DIR}
    for folder in (p for p in top.values() if p.is_dir()):
        twins = sorted(c.name for c in folder.iterdir() if c.name in top and c.name != folder.name)
        if twins:
            log.info("%s/ holds a second copy of %s; readers use the shallowest copy", folder.name, ", ".join(twins))


# ---------------------------------------------------------------- Kaggle


def _from_kaggle(name: str, target: Path) -> None:
    slug = KAGGLE_SLUGS.get(name)
    if slug is None:
        raise MedsegError(f"params.yaml: dataset.name={name!r} has no Kaggle source; set dataset.source to a local folder")
    if not _kaggle_credentials_present():
        raise MedsegError(f"Kaggle download of {slug}: no credentials found; {CREDENTIALS_HINT}")
    archive_dir = target / ARCHIVE_DIR
    archive_dir.mkdir(parents=True, exist_ok=True)
    _kaggle_download(slug, archive_dir)
    archives = sorted(p for p in archive_dir.iterdir() if _is_archive(p))
    if not archives:
        raise MedsegError(f"Kaggle download of {slug}: no archive arrived in {archive_dir}; {LOCAL_HINT}")
    for archive in archives:
        unpack_archive(archive, target)


def _kaggle_credentials_present() -> bool:
    """Whether any credential kaggle accepts exists, checked without importing kaggle."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    home = Path.home()
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    config_dirs = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else [home / ".kaggle", xdg / "kaggle"]
    files = [d / "kaggle.json" for d in config_dirs]
    files += [home / ".kaggle" / n for n in ("access_token", "access_token.txt", "credentials.json")]
    return any(f.is_file() for f in files)


def _kaggle_api_class() -> type:
    """kaggle's KaggleApi, imported quietly: on import kaggle authenticates and prints a sign-in notice."""
    try:
        with _muted():
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise MedsegError(f"the kaggle package is not installed: pip install kaggle, or {LOCAL_HINT}") from err
    except (Exception, SystemExit) as err:
        raise MedsegError(f"cannot load the kaggle package ({type(err).__name__}); {CREDENTIALS_HINT}") from None
    return KaggleApi


def _kaggle_download(slug: str, archive_dir: Path) -> None:
    api_class = _kaggle_api_class()
    secrets = _kaggle_secrets()
    try:
        with _scrubbed_output(secrets):
            api = api_class()
            api.authenticate()
            api.dataset_download_files(slug, path=str(archive_dir), unzip=False, quiet=False)
    except SystemExit:  # kaggle calls exit(1) when it finds no usable credentials
        raise MedsegError(f"Kaggle download of {slug}: credentials were not accepted; {CREDENTIALS_HINT}") from None
    except Exception as err:
        raise _kaggle_error(slug, err, secrets) from None


def _kaggle_error(slug: str, err: Exception, secrets: list[str]) -> MedsegError:
    """One line for a failed download; never the key (the original exception is dropped too)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return MedsegError(f"Kaggle download of {slug}: credentials rejected (HTTP {status}); {CREDENTIALS_HINT}")
    if status == 404:
        return MedsegError(f"Kaggle download of {slug}: dataset not found (HTTP 404); {LOCAL_HINT}")
    if isinstance(err, OSError) and status is None:  # requests' ConnectionError and Timeout are OSErrors
        return MedsegError(f"Kaggle download of {slug}: no network ({type(err).__name__}); {CREDENTIALS_HINT}")
    detail = _scrub(f"{type(err).__name__}: {err}", secrets).splitlines()[0][:300]
    return MedsegError(f"Kaggle download of {slug} failed ({detail}); {CREDENTIALS_HINT}")


def _kaggle_secrets() -> list[str]:
    """The key/token values to scrub from anything kaggle prints."""
    values = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        values.append(str(json.loads((config_dir / "kaggle.json").read_text()).get("key", "")))
    return [v for v in values if len(v) >= 4]


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _ScrubbedStream(io.TextIOBase):
    """A text stream that forwards to `sink` with every secret replaced (progress bars stay visible)."""

    def __init__(self, sink: IO[str], secrets: list[str]) -> None:
        super().__init__()
        self._sink, self._secrets = sink, secrets

    def write(self, text: str) -> int:
        self._sink.write(_scrub(text, self._secrets))
        return len(text)

    def flush(self) -> None:
        self._sink.flush()


@contextlib.contextmanager
def _scrubbed_output(secrets: list[str]) -> Iterator[None]:
    stream = _ScrubbedStream(sys.stderr, secrets)
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


@contextlib.contextmanager
def _muted() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ---------------------------------------------------------------- restricted unpickling


class _SegmentArray:
    """Inert stand-in for evalseg.io.segment_array.SegmentArray (the lung mirror's label type)."""


class _SingleSegment:
    """Inert stand-in for evalseg.io.segment_array.SingleSegment."""


def _numpy_global(module: str, name: str) -> Any:
    """numpy.core.* names resolve to numpy._core.* on numpy 2 (no deprecation warning), as is on numpy 1."""
    try:
        return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core", 1)), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(module), name)


_NUMPY_GLOBALS = {
    (mod, name)
    for base in ("numpy.core", "numpy._core")
    for mod, name in (
        (f"{base}.multiarray", "_reconstruct"),
        (f"{base}.multiarray", "scalar"),
        (f"{base}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "slice"): slice,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 pickles bytes
}
_STAND_INS = {"SegmentArray": _SegmentArray, "SingleSegment": _SingleSegment}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only; any other global is refused, never imported."""

    def __init__(self, file: IO[bytes], source: Path) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        if module.startswith("evalseg") and name in _STAND_INS:
            return _STAND_INS[name]
        raise MedsegError(
            f"{self._source}: refused to unpickle {module}.{name} (only numpy arrays and plain containers are allowed)"
        )


def load_array_pickle(path: Path) -> Any:
    """Unpickle `path` (.pkl or .pkl.gz) allowing only numpy arrays and plain containers."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return _ArrayUnpickler(fh, path).load()
    except MedsegError:
        raise
    except Exception as err:  # corrupt pickles raise many types
        raise MedsegError(f"{path}: cannot unpickle ({type(err).__name__}: {err})".splitlines()[0]) from err


def label_array(obj: Any, source: Path) -> np.ndarray:
    """The label volume inside an unpickled object: an ndarray, or the one volume in a container."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, _SegmentArray):
        return _dense_segment_array(obj, source)
    if isinstance(obj, dict):
        for key in LABEL_KEYS:
            if isinstance(obj.get(key), np.ndarray):
                return obj[key]
        values = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        values = list(obj)
    else:
        values = []
    volumes = [v for v in values if isinstance(v, _SegmentArray) or (isinstance(v, np.ndarray) and v.ndim >= 2)]
    if len(volumes) == 1:
        return label_array(volumes[0], source)
    raise MedsegError(f"{source}: no single label array found in {_describe(obj)}")


def _dense_segment_array(seg: _SegmentArray, source: Path) -> np.ndarray:
    """SegmentArray.todense(): each segment's cropped data placed back at its roi."""
    try:
        state = vars(seg)
        dense = np.full(tuple(state["shape"]), state.get("fill_value", 0), dtype=state["dtype"])
        for part in state["segments"]:
            piece = vars(part)
            if dense.dtype == bool:
                dense[piece["roi"]] |= piece["data"]
            else:
                dense[piece["roi"]] += piece["data"]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise MedsegError(f"{source}: unreadable SegmentArray ({type(err).__name__}: {err})".splitlines()[0]) from err
    return dense


def _describe(obj: Any) -> str:
    def one(v: Any) -> str:
        return f"ndarray{v.shape}" if isinstance(v, np.ndarray) else type(v).__name__

    if isinstance(obj, dict):
        return "dict{" + ", ".join(f"{k!r}: {one(v)}" for k, v in list(obj.items())[:8]) + "}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}[" + ", ".join(one(v) for v in obj[:8]) + "]"
    return one(obj)


# ---------------------------------------------------------------- lung mirror -> Decathlon layout


def _convert_task_layout(name: str, target: Path) -> None:
    """TaskNNN_*/CT/*.nii + GroundTruth/*.pkl(.gz) (the Kaggle lung mirror) -> imagesTr/labelsTr."""
    if not DATASETS.get(name, ("",))[0].endswith(".msd") or _has_decathlon_root(target):
        return
    tasks = _task_folders(target)
    if not tasks:
        return
    task = _pick_task(name, tasks, target)
    out = target / DECATHLON_DIRS.get(name, f"{task.name}_decathlon")
    pairs = _pair_cases(task)
    for case, (image, label) in sorted(pairs.items()):
        _write_case(image, label, out / "imagesTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    write_json(out / "dataset.json", _dataset_json(task, sorted(pairs)))
    log.info("converted %d cases of %s to the Decathlon layout in %s", len(pairs), task.name, out.name)


def _has_decathlon_root(target: Path) -> bool:
    return any((d / "imagesTr").is_dir() for d in [target, *target.iterdir()] if d.is_dir())


def _task_folders(target: Path) -> list[Path]:
    found = []
    for pattern in ("Task*", "*/Task*", "*/*/Task*"):
        found += [p for p in target.glob(pattern) if p.is_dir() and ARCHIVE_DIR not in p.relative_to(target).parts]
    return sorted(p for p in found if (p / "CT").is_dir() and (p / "GroundTruth").is_dir())


def _pick_task(name: str, tasks: list[Path], target: Path) -> Path:
    matching = [t for t in tasks if name.lower() in t.name.lower()]
    if len(matching) == 1 or len(tasks) == 1:
        return (matching or tasks)[0]
    listed = ", ".join(str(t.relative_to(target)) for t in tasks)
    raise MedsegError(f"{target}: cannot tell which task folder holds dataset {name!r} (found {listed})")


def _case_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.name.endswith(suffixes):
            files[_stem(path.name, suffixes)] = path
    return files


def _stem(filename: str, suffixes: tuple[str, ...]) -> str:
    for suffix in sorted(suffixes, key=len, reverse=True):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _pair_cases(task: Path) -> dict[str, tuple[Path, Path]]:
    images = _case_files(task / "CT", (".nii", ".nii.gz"))
    labels = _case_files(task / "GroundTruth", (".pkl", ".pkl.gz", ".nii", ".nii.gz"))
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        log.warning(
            "%s: %d cases have only an image or only a label, skipped: %s",
            task.name, len(unpaired), ", ".join(unpaired[:10]),
        )
    pairs = {case: (images[case], labels[case]) for case in set(images) & set(labels)}
    if not pairs:
        raise MedsegError(f"{task}: no CT/*.nii volume pairs with a GroundTruth/*.pkl(.gz) label by file name")
    return pairs


def _load_nifti(path: Path) -> Any:
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for broken files
        raise MedsegError(f"{path}: cannot read NIfTI ({type(err).__name__}: {err})".splitlines()[0]) from err


def _read_label(path: Path) -> np.ndarray:
    if path.name.endswith((".nii", ".nii.gz")):
        return np.asarray(_load_nifti(path).dataobj)
    return np.asarray(label_array(load_array_pickle(path), path))


def _write_case(image: Path, label: Path, image_out: Path, label_out: Path) -> None:
    img = _load_nifti(image)
    mask = _read_label(label)
    if mask.shape != img.shape[:3]:
        raise MedsegError(f"{label}: label shape {mask.shape} differs from image {image} shape {img.shape}")
    image_out.parent.mkdir(parents=True, exist_ok=True)
    label_out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(image_out))
    nib.save(_label_image(mask, img), str(label_out))


def _label_image(mask: np.ndarray, img: Any) -> nib.Nifti1Image:
    """The label saved with the image's affine, as the smallest integer type that holds it."""
    values = mask.astype(np.int64) if mask.dtype == bool else mask
    small = values.size == 0 or (values.min() >= 0 and values.max() <= 255)
    out = nib.Nifti1Image(np.asarray(values, dtype=np.uint8 if small else np.int16), img.affine)
    out.set_qform(img.affine, int(img.header["qform_code"]) or 1)
    out.set_sform(img.affine, int(img.header["sform_code"]) or 1)
    return out


def _dataset_json(task: Path, cases: list[str]) -> dict[str, Any]:
    labels = {"0": "background", "1": "foreground"}
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        labels = {str(k): str(v) for k, v in json.loads((task / "metadata.json").read_text())["labels"].items()}
    return {
        "name": task.name,
        "description": f"converted from {task.name}/CT and GroundTruth (Kaggle {KAGGLE_SLUGS['lung']})",
        "modality": {"0": "CT"},
        "labels": labels,
        "numTraining": len(cases),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
    }
