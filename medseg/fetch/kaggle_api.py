"""Downloading a dataset's archive from Kaggle, without ever showing the API key.

Why this module exists: the kaggle package authenticates and prints an 18-line sign-in notice when
it is imported, and exits the process when it finds no credentials. So credentials are checked
first without it, it is imported late (inside a function, never at module level) and muted, and
everything it prints or raises is scrubbed of the key: a failed download is one line naming the
likely cause, with the original exception dropped so no traceback can leak the key either.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from medseg.errors import MedsegError
from medseg.fetch.archives import ARCHIVE_DIR, is_archive, unpack_archive

KAGGLE_SLUGS = {
    "lgg": "mateuszbuda/lgg-mri-segmentation",
    "siim": "jesperdramsch/siim-acr-pneumothorax-segmentation-data",
    "isic": "tschandl/isic2018-challenge-task1-data-segmentation",
    "lung": "modaresimr/medical-image-segmentation",
}
LOCAL_HINT = "use a local folder instead: dvc exp run -S dataset.source=/path/to/folder"
CREDENTIALS_HINT = (
    "provide credentials in ~/.kaggle/kaggle.json (chmod 600) or as KAGGLE_USERNAME and KAGGLE_KEY "
    f"(or KAGGLE_API_TOKEN), or {LOCAL_HINT}"
)


def from_kaggle(name: str, target: Path) -> None:
    """Download dataset `name`'s archive into target/_archive and unpack it into `target`."""
    slug = KAGGLE_SLUGS.get(name)
    if slug is None:
        raise MedsegError(f"params.yaml: dataset.name={name!r} has no Kaggle source; set dataset.source to a local folder")
    if not _kaggle_credentials_present():
        raise MedsegError(f"Kaggle download of {slug}: no credentials found; {CREDENTIALS_HINT}")
    archive_dir = target / ARCHIVE_DIR
    archive_dir.mkdir(parents=True, exist_ok=True)
    _kaggle_download(slug, archive_dir)
    archives = sorted(p for p in archive_dir.iterdir() if is_archive(p))
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
