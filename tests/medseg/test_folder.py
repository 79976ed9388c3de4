"""The 2D folder reader: images/ and masks/ paired by name, binary masks and label maps, groups from
groups.csv; and the download + convert stages on such a folder given as dataset.source."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from medseg.image_files import read_label_map
from medseg.datasets.folder import CHANNELS, count_summary, foreground, list_cases, pair_files, read_case
from medseg.errors import MedsegError
from tests.conftest import make_workdir, reader, stage

SIDE = 24


def label_map(seed: int, values: tuple[int, ...] = (0, 255)) -> np.ndarray:
    """A (SIDE, SIDE) uint8 map: background with one square per non-zero value, at a seeded place."""
    rng = np.random.default_rng(seed)
    out = np.zeros((SIDE, SIDE), np.uint8)
    for value in values[1:]:
        r, c = rng.integers(0, SIDE - 6, 2)
        out[r:r + 6, c:c + 6] = value
    return out


def write_folder(root: Path, names: list[str], *, mask_tail: str = "_mask", values: tuple[int, ...] = (0, 255),
                 colour: bool = False) -> Path:
    """root/images/<name>.png (grey, or BGR colour) with root/masks/<name><mask_tail>.png label maps."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, name in enumerate(names):
        grey = np.full((SIDE, SIDE), 20 + 10 * i, np.uint8)
        image = np.dstack([grey, grey // 2, np.full_like(grey, 200)]) if colour else grey
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{name}{mask_tail}.png"), label_map(i, values))
    return root


def test_pairs_by_name_whatever_the_mask_tail(tmp_path):
    for tail in ("", "_mask", "_segmentation"):
        root = write_folder(tmp_path / (tail or "plain"), ["b", "a", "c_1"], mask_tail=tail)
        pairs = pair_files(root)
        assert sorted(pairs) == ["a.png", "b.png", "c_1.png"]
        assert all(mask.name == f"{Path(name).stem}{tail}.png" for name, (_, mask) in pairs.items())


def test_unpaired_and_duplicate_files_are_one_line_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "d", ["a", "b"])
    (root / "masks" / "b_mask.png").unlink()
    with pytest.raises(MedsegError, match=r"images/b\.png: no mask named b"):
        pair_files(root)
    root = write_folder(tmp_path / "e", ["a"])
    cv2.imwrite(str(root / "masks" / "z_mask.png"), label_map(0))
    with pytest.raises(MedsegError, match=r"masks/z_mask\.png: mask without an image named z_mask"):
        pair_files(root)
    root = write_folder(tmp_path / "f", ["a"])
    cv2.imwrite(str(root / "images" / "a.tif"), np.zeros((SIDE, SIDE), np.uint8))
    with pytest.raises(MedsegError, match="two files named a"):
        pair_files(root)
    root = write_folder(tmp_path / "g", ["a"])
    cv2.imwrite(str(root / "masks" / "a.png"), label_map(0))
    with pytest.raises(MedsegError, match="a second mask for image a.png"):
        pair_files(root)


def test_without_groups_every_image_is_its_own_case(tmp_path):
    write_folder(tmp_path / "raw" / "nested", ["x", "y", "z"], colour=True)
    cases = list_cases(tmp_path / "raw")  # found one level down
    assert [c.group for c in cases] == ["x", "y", "z"]
    assert count_summary(cases) == {"groups": 3, "images": 3}
    (slice_,) = read_case(cases[1], reader())
    assert slice_.image.shape == (SIDE, SIDE, CHANNELS) and slice_.index == 0
    # the file's colour order (BGR on disk) comes back as RGB: red 200, green 15, blue 30
    assert slice_.image[0, 0].tolist() == pytest.approx([200 / 255, 15 / 255, 30 / 255])
    assert slice_.mask.sum() == 36 and (slice_.mask == (label_map(1) > 0)).all()


def test_groups_csv_stacks_a_patients_images_in_slice_order(tmp_path):
    root = write_folder(tmp_path, ["p1_a", "p1_b", "p2_a", "p1_c"])
    pd.DataFrame({"image": ["p1_a.png", "p1_b.png", "p2_a.png", "p1_c.png"], "group": ["P1", "P1", "P2", "P1"],
                  "slice": [3, 1, 0, 2]}).to_csv(root / "groups.csv", index=False)
    cases = list_cases(root)
    assert [(c.group, [i.name for i, _ in c.extra]) for c in cases] == [
        ("P1", ["p1_b.png", "p1_c.png", "p1_a.png"]), ("P2", ["p2_a.png"])]
    slices = list(read_case(cases[0], reader()))
    assert [s.index for s in slices] == [0, 1, 2]
    assert slices[0].image[0, 0, 0] == pytest.approx(30 / 255)  # p1_b, the second image written
    # rescaled as one volume: the group's darkest image (p1_a, 20) goes to 0, its brightest (p1_c, 50) to 1
    volume = [s.image[0, 0, 0] for s in read_case(cases[0], reader(normalize="volume"))]
    assert volume == pytest.approx([1 / 3, 1.0, 0.0], abs=0.01)


@pytest.mark.parametrize(("rows", "message"), [
    ({"image": ["a.png"], "group": ["P"]}, r"image b\.png is not listed \(1 unlisted\)"),
    ({"image": ["a.png", "b.png", "q.png"], "group": ["P", "P", "Q"]}, r"line 4: image 'q\.png' is not in images/"),
    ({"image": ["a.png", "a.png"], "group": ["P", "P"]}, "line 3: image a.png listed twice"),
    ({"name": ["a.png", "b.png"], "group": ["P", "P"]}, r"missing column\(s\) image"),
    ({"image": ["a.png", "b.png"], "group": ["P", "P"], "slice": [1, 1]}, "group P has two images at slice 1"),
    ({"image": ["a.png", "b.png"], "group": ["P", "P"], "slice": [1, "x"]}, "line 3: slice 'x' is not a number"),
])
def test_bad_groups_csv_is_one_line_naming_it(tmp_path, rows, message):
    root = write_folder(tmp_path, ["a", "b"])
    pd.DataFrame(rows).to_csv(root / "groups.csv", index=False)
    with pytest.raises(MedsegError, match=message) as err:
        list_cases(root)
    assert str(err.value).startswith(str(root / "groups.csv"))


def test_label_maps_and_dataset_labels(tmp_path):
    root = write_folder(tmp_path, ["a"], values=(0, 1, 2, 4))
    label = read_label_map(root / "masks" / "a_mask.png", (SIDE, SIDE))
    assert sorted(np.unique(label).tolist()) == [0, 1, 2, 4]
    (case,) = list_cases(root)
    everything = next(read_case(case, reader())).mask
    assert next(read_case(case, reader(labels=[4]))).label_values == (1, 2, 4)  # what convert checks dataset.labels on
    enhancing = next(read_case(case, reader(labels=[4]))).mask
    assert everything.sum() == (label > 0).sum() and enhancing.sum() == (label == 4).sum() > 0
    assert not (enhancing & ~everything).any()
    assert (foreground(label, [1, 2]) == np.isin(label, [1, 2])).all()


def test_masks_that_are_not_labels_are_refused(tmp_path):
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.arange(SIDE * SIDE, dtype=np.uint8).reshape(SIDE, SIDE) % 200)  # anti-aliased grey
    with pytest.raises(MedsegError, match="200 distinct values"):
        read_label_map(path, (SIDE, SIDE))
    colour = np.zeros((SIDE, SIDE, 3), np.uint8)
    colour[2:5, 2:5, 2] = 255  # a red lesion on black: binary
    cv2.imwrite(str(path), colour)
    assert (read_label_map(path, (SIDE, SIDE)) > 0).sum() == 9
    colour[10:12, 10:12] = (1, 2, 3)
    cv2.imwrite(str(path), colour)
    with pytest.raises(MedsegError, match="colour mask with values"):
        read_label_map(path, (SIDE, SIDE))
    with pytest.raises(MedsegError, match=r"mask size \(24, 24\) differs from image size \(30, 30\)"):
        read_label_map(path, (30, 30))


def test_download_and_convert_a_local_folder(tmp_path):
    """`-S dataset.name=folder -S dataset.source=DIR` through the download and convert stages."""
    source = write_folder(tmp_path / "mine", [f"img{i}" for i in range(6)])
    pd.DataFrame({"image": [f"img{i}.png" for i in range(6)], "group": [f"P{i // 2}" for i in range(6)]}).to_csv(
        source / "groups.csv", index=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*"))
    work = make_workdir(tmp_path, {"dataset.name": "folder", "dataset.source": str(source)})
    for module in ("stages.download", "stages.convert"):
        result = stage(work, module)
        assert result.returncode == 0, result.stderr[-3000:]
    manifest = pd.read_csv(work / "data/slices/manifest.csv", dtype={"group": str})
    assert manifest.groupby("group").size().to_dict() == {"P0": 2, "P1": 2, "P2": 2}
    assert (manifest["fg_pixels"] > 0).all()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*")) == before  # the user's folder untouched
