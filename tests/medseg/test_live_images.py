"""medseg.live_images: the fixed val slices and the image | truth | prediction grid."""
import numpy as np

from medseg.live_images import grid_slices, prediction_grid


def test_the_most_foreground_slices_in_a_fixed_order():
    masks = np.zeros((6, 4, 4), np.uint8)
    for i, area in enumerate([0, 3, 1, 3, 5, 0]):
        masks[i].flat[:area] = 1
    assert grid_slices(masks, 3).tolist() == [4, 1, 3]
    assert grid_slices(masks[:2], 4).tolist() == [1, 0]


def test_grid_columns_are_image_truth_prediction():
    images = np.full((2, 4, 5, 1), 100, np.uint8)
    masks = np.zeros((2, 4, 5), np.uint8)
    masks[1, 0, 0] = 1
    probs = np.zeros((2, 4, 5), np.float32)
    probs[1, 3, 4] = 0.9
    grid = prediction_grid(images, masks, probs, np.array([1]), 0.5)
    assert grid.shape == (4, 15, 3) and grid.dtype == np.uint8
    assert (grid[:, :5] == 100).all()
    assert grid[0, 5].tolist() == [255, 255, 255] and grid[:, 5:10].sum() == 3 * 255
    assert grid[3, 14].tolist() == [255, 255, 255] and grid[:, 10:].sum() == 3 * 255
