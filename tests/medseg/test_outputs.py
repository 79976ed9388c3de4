import pytest

from medseg.outputs import staged_dir, staged_files, write_atomic


def test_staged_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "old.txt").read_text() == "old"
    with staged_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_atomic_leaves_no_temp(tmp_path):
    write_atomic(tmp_path / "a" / "f.json", "{}")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.json"]


def test_staged_files_adds_all_or_nothing_and_keeps_other_files(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "mine.txt").write_text("the user's")
    with pytest.raises(RuntimeError):
        with staged_files(final) as tmp:
            (tmp / "a_mask.png").write_text("half")
            raise RuntimeError("bad file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in final.iterdir()) == ["mine.txt"]
    with staged_files(final) as tmp:
        (tmp / "a_mask.png").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["a_mask.png", "mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_writes_no_nan(tmp_path):
    """NaN is not JSON: a metric with no value is null (issue 27: metrics.json is always valid JSON)."""
    import json
    import math

    from medseg.outputs import write_json

    write_json(tmp_path / "m.json", {"dice": float("nan"), "rates": [1.0, float("inf")], "n": 3, "ok": 0.5})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"dice": None, "rates": [1.0, None], "n": 3, "ok": 0.5}
    assert not math.isnan(json.loads(text)["ok"])
