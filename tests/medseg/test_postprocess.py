import numpy as np

from medseg.postprocess import clean_mask, clean_stack


def blobs() -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[2:7, 2:7] = True      # 25 px
    m[10:13, 10:13] = True  # 9 px
    m[18, 18] = True        # 1 px
    return m


def test_min_area_drops_small_components_only():
    out = clean_mask(blobs(), min_area=9, largest_only=False)
    assert out.sum() == 34 and not out[18, 18]
    assert clean_mask(blobs(), min_area=10, largest_only=False).sum() == 25


def test_largest_component_and_noop():
    assert clean_mask(blobs(), 0, largest_only=True).sum() == 25
    assert clean_mask(np.zeros((5, 5), bool), 3, True).sum() == 0
    m = blobs()
    assert clean_mask(m, 0, False) is m
    assert clean_stack(np.stack([m, m]), 2, False).sum() == 68
