"""Put a real dataset under data/raw/<name>/ as it ships, from Kaggle or from a local folder/archive.

Why this package is careful: everything it reads is untrusted input. This module only decides where
the data comes from and what happens after it lands; each risky step has its own module:
archives.py unpacks every archive (refusing members that land outside the destination, never
creating links or devices), pickles.py reads the one pickled format we meet (the lung mirror's
labels) building only numpy arrays and plain containers, kaggle_api.py imports kaggle late, muted
and scrubbed (it prints a sign-in notice on import and the API key must never be shown), and
decathlon.py turns the lung mirror into the Decathlon layout. A local folder is mirrored with hard
links (else copies) and never modified; errors name files where the user has them.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from medseg.image_files import is_clutter
from medseg.errors import MedsegError
from medseg.fetch.archives import ARCHIVE_DIR, ARCHIVE_SUFFIXES, is_archive, unpack_archive, unpack_nested
from medseg.fetch.decathlon import convert_task_layout
from medseg.fetch.kaggle_api import from_kaggle

__all__ = ["fetch_dataset"]

log = logging.getLogger("medseg.fetch")


def fetch_dataset(name: str, source: str, target: Path) -> None:
    """Fill `target` with dataset `name` from `source` ('kaggle' or a local folder/archive)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if source == "kaggle":
        from_kaggle(name, target)
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
    convert_task_layout(name, target)


def _named_by_source(err: MedsegError, source: Path, target: Path) -> MedsegError:
    """The error with files named where the user has them: `target` is the download stage's temp
    folder, removed on failure. A folder's copy mirrors it; an archive's members read archive.zip/member."""
    text = str(err).replace(str(target / ARCHIVE_DIR / source.name), str(source))
    return MedsegError(text.replace(f"{target}/", f"{source}/"))


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
        for archive in sorted(p for p in target.rglob("*") if is_archive(p)):
            if ARCHIVE_DIR not in archive.relative_to(target).parts:
                unpack_nested(archive, depth=1)
    elif is_archive(source):
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


def _note_duplicate_copies(target: Path) -> None:
    """Log second copies that archives carry (LGG lgg-mri-segmentation/kaggle_3m, SIIM pneumothorax/)."""
    top = {p.name: p for p in target.iterdir() if p.name != ARCHIVE_DIR}
    for folder in (p for p in top.values() if p.is_dir()):
        twins = sorted(c.name for c in folder.iterdir() if c.name in top and c.name != folder.name)
        if twins:
            log.info("%s/ holds a second copy of %s; readers use the shallowest copy", folder.name, ", ".join(twins))
