"""Write stage outputs so an interrupted stage never leaves something that looks finished.

A folder output is built in a temp sibling and swapped in at the end: on Linux in one atomic step
(renameat2 RENAME_EXCHANGE), so a kill at any moment leaves the old or the new folder in place;
where the system or filesystem lacks that call, by two renames, and a kill between them leaves the
old folder beside its place, which the next write of that output puts back (`recover`). The temp
siblings of a killed process (`.<name>.tmp-<pid>`, `.<name>.old-<pid>`) are removed by the next
write of the same output.
"""
from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError

AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _sibling(final: Path, kind: str, pid: int | None = None) -> Path:
    return final.with_name(f".{final.name}.{kind}-{os.getpid() if pid is None else pid}")


def _alive(pid: int) -> bool:
    """A process with this id is running (this one included: a temp sibling may be in use here):
    its temp files are its own business."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>old|tmp)-(?P<pid>\d+)")
_TIDIED: set[Path] = set()  # folders write_atomic has tidied in this process (once each: a folder may hold many files)


def recover(folder: Path) -> None:
    """Tidy up in `folder` after processes killed while writing there: an output lost between the
    two renames of a non-atomic swap is put back from its `.old-` copy (the previous output,
    complete); the other temp siblings of processes no longer running are removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for leftover in sorted(folder.iterdir(), key=lambda p: p.name.rpartition(".")[2]):  # old-* before tmp-*
        match = LEFTOVER.fullmatch(leftover.name)
        if match is None or _alive(int(match["pid"])):
            continue
        final = folder / match["name"]
        if match["kind"] == "old" and not final.exists() and not final.is_symlink():
            leftover.rename(final)
        else:
            _remove(leftover)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc 2.28+ (musl, old systems)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` in the place of `final`, which holds the old or the new folder
    at every moment where the swap is atomic (see the module docstring for where it is not)."""
    if not final.exists() and not final.is_symlink():
        tmp.rename(final)
    elif _exchange(tmp, final):
        _remove(tmp)  # now the old output
    else:
        old = _sibling(final, "old")
        final.rename(old)
        tmp.rename(final)  # a kill before this line: recover() renames `old` back
        _remove(old)


def _empty_sibling(final: Path) -> Path:
    """A fresh temp folder beside `final` (same filesystem, so renames are atomic), after tidying up
    what a killed earlier run left there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final.parent)
    tmp = _sibling(final, "tmp")
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
    replace_folder(tmp, final)


@contextmanager
def staged_files(final: Path) -> Iterator[Path]:
    """Yield an empty sibling temp folder; on success its files (in subfolders too) are moved into
    `final` (created if needed, other files there kept), on error it is removed and `final` is
    left as it was. A `final` that cannot be created, or a staged file whose place there is taken
    by a folder (or the reverse), is one line, checked before any file moves.

    For a folder the user names (predict's --out), which may hold files of their own: staged_dir
    would replace it whole."""
    final = Path(final).resolve()
    if final.exists() and not final.is_dir():
        raise MedsegError(f"{final}: exists and is not a folder")
    above = next((p for p in [final, *final.parents] if p.exists()), final)
    if not above.is_dir():
        raise MedsegError(f"{final}: cannot create the output folder ({above} is a file)")
    try:
        tmp = _empty_sibling(final)
    except (OSError, ValueError) as err:  # no permission, a read-only disk, '/' (no sibling of it)
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise MedsegError(f"{final}: cannot create the output folder ({reason})") from err
    try:
        yield tmp
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for path in files:
            _check_place(final, final / path.relative_to(tmp))
        try:
            final.mkdir(exist_ok=True)
            for path in files:
                target = final / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        except OSError as err:
            raise MedsegError(f"{final}: cannot write the outputs ({err.strerror or type(err).__name__})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_place(final: Path, target: Path) -> None:
    """`target` (under `final`) can take a file: it is no folder, and no folder above it is a file."""
    above = [p for p in target.parents if p.is_relative_to(final) and p != final]
    blocked = target if target.is_dir() else next((p for p in above if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise MedsegError(f"{blocked}: {'a folder' if blocked.is_dir() else 'a file'} is in the way of "
                          f"{target.relative_to(final)}; move it or choose another --out")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file through a temp name and rename, so readers never see half of it (the temp
    files of a killed earlier writer are removed first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.resolve() not in _TIDIED:
        recover(path.parent)
        _TIDIED.add(path.parent.resolve())
    tmp = _sibling(path, "tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as JSON that any reader takes: NaN and infinities (a Dice of no case, an undefined rate) are
    written as null, never as the NaN that json.dumps would write and JSON does not have."""
    write_atomic(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj
