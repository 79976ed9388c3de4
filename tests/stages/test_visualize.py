"""stages.visualize: the feature figures show the same best and worst cases as the overlays, and
a trained-model folder (a best.pt, or a k-fold folder's fold 0) becomes features/<model>.png."""
from __future__ import annotations

import json
import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medseg.activations import look_inside
from medseg.plots import map_grid
from medseg.model_loader import load_trained
from medseg.figures import chosen_cases, feature_rows
from tests.tiny_models import PRE, kfold_folder, save_tiny

SIZE = PRE["size"]


def cases_and_test() -> tuple[pd.DataFrame, pd.DataFrame]:
    cases = pd.DataFrame({"group": ["a", "b", "c", "empty"], "dice": [0.9, 0.2, 0.6, 1.0],
                          "gt_voxels": [30, 40, 50, 0]})
    test = pd.DataFrame({"slice_id": ["a_0", "a_1", "b_0", "b_1", "c_0", "empty_0"],
                         "group": ["a", "a", "b", "b", "c", "empty"], "fg_pixels": [5, 25, 30, 10, 50, 0]})
    return cases, test


def test_best_and_worst_cases_with_foreground_at_their_largest_lesion_slice():
    cases, test = cases_and_test()
    assert chosen_cases(cases, test, 1) == [("best", "a", "a_1", 0.9), ("worst", "b", "b_0", 0.2)]
    # the overlays' count 2: the feature figure's cases (count 1) are the first best and first worst of them
    assert [c[1] for c in chosen_cases(cases, test, 2)] == ["a", "c", "b"]


def write_slices(root, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / "data/slices" / folder).mkdir(parents=True)
    (root / "data/slices/info.json").write_text(json.dumps(PRE))  # the slices the tiny models were made for
    for slice_id in test["slice_id"]:
        cv2.imwrite(str(root / "data/slices/images" / f"{slice_id}.png"),
                    rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[10:20, 12:24] = 255
        cv2.imwrite(str(root / "data/slices/masks" / f"{slice_id}.png"), mask)


@pytest.mark.parametrize("name, kfold", [("attn_unet", False), ("upernet", True)])
def test_feature_figure_is_written_from_the_trained_model(tmp_path, monkeypatch, name, kfold):
    cases, test = cases_and_test()
    write_slices(tmp_path, test)
    models = tmp_path / "data/models" / name
    kfold_folder(models, folds=2, name=name) if kfold else save_tiny(models / "best.pt", name)
    monkeypatch.chdir(tmp_path)
    rows = feature_rows(name, cases, test, channels=1)
    assert [r[0].split(":")[0] for r in rows[::2]] == ["best", "worst"]
    assert all(image is None for _, image, _, _ in rows[1::2])  # each case's Grad-CAM row
    gates = 4 if name == "attn_unet" else 0
    assert [len(r[3]) for r in rows] == [5 + gates, 5, 5 + gates, 5]
    if kfold:  # what fold 0 sees, not another fold's network
        fold0 = load_trained(models / "fold_0" / "best.pt").members[0]
        top, _ = look_inside(fold0, rows[0][1], rows[0][2] > 0).panels()
        np.testing.assert_allclose(rows[0][3][4][1], top[4][1], rtol=1e-5)
    path = tmp_path / "features.png"
    map_grid(rows, name, path, gates=bool(gates))
    columns = 1 + 5 + gates
    with Image.open(path) as png:  # 1.75 in per panel at 100 dpi, squeezed to fit a 1,400 px page
        assert png.size[0] == round(min(1.75 * columns, 13.5) * 100) <= 1400
