"""Safe unpacking of the zip and tar archives a dataset ships as, nested ones included.

Why this module exists: every archive is untrusted input, so all of them go through this one
unpacker. Members that would land outside the destination are refused, links and devices are
refused and never created, and a refusal leaves nothing from that archive written. Zip and tar
differ only in how members are listed, typed and opened; one extraction loop does the rest.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from medseg.image_files import is_clutter
from medseg.errors import MedsegError, cannot

log = logging.getLogger("medseg.fetch")

ARCHIVE_DIR = "_archive"  # the downloaded/copied archive is kept here; it unpacks beside it
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_NESTING = 4
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack_archive(archive: Path, dest: Path) -> list[Path]:
    """Unpack a zip or tar into `dest`, then each archive inside it into a folder beside it.

    No member may land outside `dest`; links and devices are refused, never created. Returns the
    files written (nested ones included)."""
    return _unpack_tree(Path(archive), Path(dest), depth=0)


def unpack_nested(archive: Path, depth: int) -> list[Path]:
    """Unpack an archive found inside the dataset into a folder beside it named after it."""
    folder = archive.with_name(_strip_archive_suffix(archive.name))
    if folder.exists():
        log.info("%s: %s/ already exists, leaving the archive as it is", archive, folder.name)
        return []
    if depth > MAX_NESTING:
        raise MedsegError(f"{archive}: archives nested more than {MAX_NESTING} deep; refusing to unpack further")
    folder.mkdir()
    return _unpack_tree(archive, folder, depth)


def _unpack_tree(archive: Path, dest: Path, depth: int) -> list[Path]:
    written = _unpack_one(archive, dest)
    log.info("unpacked %s: %d files", archive.name, len(written))
    for path in list(written):
        if is_archive(path):
            written += unpack_nested(path, depth + 1)
    return written


def _strip_archive_suffix(name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unpack_one(archive: Path, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return _extract(archive, dest, _zip_members(zf))
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                return _extract(archive, dest, _tar_members(tf))
    except (zipfile.BadZipFile, tarfile.TarError, RuntimeError, NotImplementedError, EOFError, OSError) as err:
        raise cannot(archive, "unpack", err) from err
    raise MedsegError(f"{archive}: not a zip or tar archive")


# ---------------------------------------------------------------- one extraction loop for both formats


@dataclass(frozen=True)
class _Member:
    """One archive member as the extraction loop sees it, whatever the format."""

    name: str  # the path as stored in the archive
    is_dir: bool
    refusal: str | None  # why it may not be unpacked (a link, a device...); None for a file or folder
    opener: Callable[[], IO[bytes]]  # its content; only called for files that passed every check


def _extract(archive: Path, dest: Path, members: Iterable[_Member]) -> list[Path]:
    """Check every member (its path, then its type) before writing any, then write them in order."""
    plan = [(m, out) for m in members if (out := _member_path(archive, m.name, dest)) is not None]
    for member, _ in plan:
        if member.refusal is not None:
            raise _refused(archive, member.name, member.refusal)
    written = []
    for member, out in plan:
        if member.is_dir:
            out.mkdir(parents=True, exist_ok=True)
            continue
        with member.opener() as src:
            written.append(_write_member(src, out))
    return written


def _zip_members(zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        yield _Member(info.filename, info.is_dir(), _zip_refusal(info), functools.partial(zf.open, info))


def _zip_refusal(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16  # Unix mode bits, 0 for archives made on Windows
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is a device, fifo or socket"
    return None


def _tar_members(tf: tarfile.TarFile) -> Iterator[_Member]:
    for member in tf.getmembers():
        yield _Member(member.name, member.isdir(), _tar_refusal(member), functools.partial(_tar_open, tf, member))


def _tar_refusal(member: tarfile.TarInfo) -> str | None:
    if member.issym() or member.islnk():
        return f"is a link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "is a device, fifo or other special file"
    return None


def _tar_open(tf: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    src = tf.extractfile(member)
    assert src is not None  # regular files only, checked by _tar_refusal
    return src


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
