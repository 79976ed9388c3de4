"""Write stage outputs so an interrupted stage never leaves something that looks finished."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError


def _empty_sibling(final: Path) -> Path:
    """A fresh temp folder beside `final` (same filesystem, so renames are atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty sibling temp folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    tmp = _empty_sibling(final)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_files(final: Path) -> Iterator[Path]:
    """Yield an empty sibling temp folder; on success its files are moved into `final` (created if
    needed, other files there kept), on error it is removed and `final` is left as it was.

    For a folder the user names (predict's --out), which may hold files of their own: staged_dir
    would replace it whole."""
    final = Path(final).resolve()
    if final.exists() and not final.is_dir():
        raise MedsegError(f"{final}: exists and is not a folder")
    tmp = _empty_sibling(final)
    try:
        yield tmp
        final.mkdir(exist_ok=True)
        for path in sorted(tmp.iterdir()):
            os.replace(path, final / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file through a temp name and rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
