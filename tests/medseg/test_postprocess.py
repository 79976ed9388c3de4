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


def case_rows(groups: list[str], indices: list[int]):
    import pandas as pd

    return pd.DataFrame({"group": groups, "index": indices})


def test_volume_components_join_across_slices_in_index_order():
    # one case of 3 slices stored out of order (index 2, 0, 1): a 2x2 blob on the slices with index 0 and 1
    # is one 8-voxel 3D component, a 1-pixel speck on index 2 is another; slices joined by index, not by row
    stack = np.zeros((3, 10, 10), bool)
    stack[1, 2:4, 2:4] = stack[2, 2:4, 2:4] = True  # rows 1 and 2 hold index 0 and 1
    stack[0, 8, 8] = True  # row 0 holds index 2
    rows = case_rows(["a", "a", "a"], [2, 0, 1])
    from medseg.postprocess import clean_volumes

    assert clean_volumes(stack, rows, 8, False).sum() == 8 and not clean_volumes(stack, rows, 8, False)[0].any()
    assert clean_volumes(stack, rows, 9, False).sum() == 0
    assert clean_volumes(stack, rows, 0, True).sum() == 8
    assert clean_volumes(stack, rows, 0, False) is stack


def test_volume_components_are_per_case():
    # the same pixels in two cases: each case keeps its own largest component
    stack = np.zeros((2, 10, 10), bool)
    stack[0, 0:3, 0:3] = True  # case a: 9 voxels
    stack[1, 5:7, 5:7] = True  # case b: 4 voxels, its only component
    from medseg.postprocess import clean_volumes

    out = clean_volumes(stack, case_rows(["a", "b"], [0, 0]), 0, True)
    assert out.sum() == 13
    assert clean_volumes(stack, case_rows(["a", "b"], [0, 0]), 5, False).sum() == 9
