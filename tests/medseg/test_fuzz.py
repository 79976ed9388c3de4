"""Fuzzing the parsers that read untrusted bytes: whatever the input, the only exception that may
escape is MedsegError (which the stages turn into one `error:` line); anything else would reach
the user as a traceback. Where a result comes back, it must be a correct one.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.image_files import read_binary_mask, read_image
from medseg.datasets.rle import rle_decode, rle_encode
from medseg.errors import MedsegError

FUZZ = settings(max_examples=200, deadline=None)
SIDES = st.integers(min_value=1, max_value=12)
SUFFIXES = st.sampled_from([".png", ".jpg", ".tif"])


def _decoded_or_refused(text: str, height: int, width: int) -> np.ndarray | None:
    try:
        mask = rle_decode(text, height, width)
    except MedsegError as err:
        assert "\n" not in str(err)
        return None
    assert mask.shape == (height, width) and mask.dtype == bool
    return mask


@FUZZ
@given(text=st.text(max_size=60), height=SIDES, width=SIDES)
def test_rle_decode_on_any_text(text, height, width):
    _decoded_or_refused(text, height, width)


@FUZZ
@given(values=st.lists(st.integers(min_value=-5, max_value=10**14), max_size=12), height=SIDES, width=SIDES)
def test_rle_decode_on_integer_lists(values, height, width):
    text = " ".join(map(str, values))
    mask = _decoded_or_refused(text, height, width)
    if mask is not None and text != "-1":  # accepted: it must be the canonical runs of that mask
        lengths = np.array(values, np.int64).reshape(-1, 2)
        assert int(mask.sum()) == int(lengths[:, 1].sum())
        assert rle_decode(rle_encode(mask), height, width).tolist() == mask.tolist()


def _write(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    with handle:
        handle.write(data)
    return Path(handle.name)


def _read_or_refused(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    try:
        return read_image(path) if shape is None else read_binary_mask(path, shape)
    except MedsegError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return None
    finally:
        path.unlink()


@FUZZ
@given(data=st.binary(max_size=400), suffix=SUFFIXES)
def test_read_image_on_any_bytes(data, suffix):
    array = _read_or_refused(_write(data, suffix))
    assert array is None or (isinstance(array, np.ndarray) and array.ndim in (2, 3) and array.size > 0)


@FUZZ
@given(data=st.binary(max_size=400), suffix=SUFFIXES, height=SIDES, width=SIDES)
def test_read_binary_mask_on_any_bytes(data, suffix, height, width):
    mask = _read_or_refused(_write(data, suffix), (height, width))
    assert mask is None or (mask.shape == (height, width) and mask.dtype == bool)


@pytest.fixture(scope="module")
def png() -> tuple[bytes, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes(), image


@FUZZ
@given(fraction=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_png_is_refused_or_complete(png, fraction):
    data, image = png
    cut = int(len(data) * fraction)
    array = _read_or_refused(_write(data[:cut], ".png"))
    if array is not None:  # only the whole file may decode, and then to the stored pixels
        assert np.array_equal(array, image)


@pytest.fixture(scope="module")
def valid_files() -> dict[str, bytes]:
    """A small valid PNG, JPEG and TIFF, for mutation: random bytes rarely get past a file's magic."""
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    return {suffix: cv2.imencode(suffix, image)[1].tobytes() for suffix in (".png", ".jpg", ".tif")}


@FUZZ
@given(suffix=SUFFIXES, edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
       keep=st.floats(min_value=0.0, max_value=1.0))
def test_read_image_on_corrupted_valid_files(valid_files, suffix, edits, keep):
    data = bytearray(valid_files[suffix])
    for index, value in edits:
        data[index % len(data)] = value
    array = _read_or_refused(_write(bytes(data[: max(1, int(len(data) * keep))]), suffix))
    assert array is None or (isinstance(array, np.ndarray) and array.ndim in (2, 3) and array.size > 0)


@FUZZ
@given(values=st.sets(st.integers(min_value=0, max_value=255), min_size=1, max_size=4))
def test_mask_values_outside_0_1_255_are_refused(values):
    mask = np.array(sorted(values), np.uint8).repeat(4).reshape(-1, 1)
    ok, encoded = cv2.imencode(".png", mask)
    assert ok
    result = _read_or_refused(_write(encoded.tobytes(), ".png"), mask.shape)
    if values <= {0, 1, 255}:
        assert result is not None and np.array_equal(result, mask > 0)
    else:
        assert result is None
