"""stages.export and predict on its output: one averaged graph for a k-fold folder, with the metadata
predict needs, run by onnxruntime on every input kind with torch never imported."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import onnx
import pytest

from medseg.prediction import file_probs, list_sources, load_predictor
from tests.conftest import REPO
from tests.tiny_models import PRE, kfold_folder, safe_threshold, save_tiny

# runs predict's main, then says whether anything imported torch on the way
NO_TORCH = ("import sys; from medseg.cli import run_stage; from stages.predict import main; "
            "sys.argv = ['predict', *sys.argv[1:]]; run_stage(main); print('torch imported:', 'torch' in sys.modules)")


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(k-fold model folder of 3 tiny U-Nets, its export made by the CLI)."""
    root = tmp_path_factory.mktemp("export")
    folder, out = kfold_folder(root / "unet", folds=3, threshold=0.42), root / "onnx"
    result = run("stages.export", "--model", str(folder), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return folder, out


@pytest.fixture(scope="module")
def sources(tmp_path_factory, make_phantom) -> Path:
    """A folder holding every input kind predict takes: odd-sized PNG, colour JPG, DICOM, NIfTI."""
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "odd.png"), rng.integers(0, 255, (61, 77), dtype=np.uint8))
    cv2.imwrite(str(folder / "colour.jpg"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    shutil.copy(next(make_phantom("siim", cases=1, depth=1, size=48, seed=0).rglob("*.dcm")), folder / "x.dcm")
    shutil.copy(make_phantom("msd", cases=1, depth=6, size=40, seed=0) / "imagesTr" / "phantom_000.nii.gz",
                folder / "ct.nii.gz")
    return folder


def test_export_writes_a_dynamic_graph_and_what_predict_needs(exported):
    folder, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["folds"] == 3 and meta["threshold"] == pytest.approx(0.42)
    assert meta["threshold_source"] == "test: out-of-fold best F1"
    assert meta["preprocess"] == PRE and meta["in_channels"] == 1 and meta["model"] == "unet"
    assert meta["input"]["divisor"] == 255.0 and meta["ct_window_hu"] == [-1350.0, 150.0]
    assert meta["postprocess"] is None and meta["postprocess_source"].startswith("none")  # evaluate never scored it
    assert len(meta["checkpoint_sha256"]) == 3
    assert meta["check"]["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(out / "model.onnx"))
    assert next(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    dims = [(d.dim_param or d.dim_value) for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"] and graph.graph.input[0].name == meta["input"]["name"]


def test_predict_runs_the_export_without_torch_as_pytorch_runs_the_folds(exported, sources, tmp_path):
    folder, out = exported
    assert load_predictor(out, tta=False).threshold == load_predictor(folder, tta=False).threshold == 0.42
    # a threshold the masks do not hinge on, from the PyTorch ensemble's probabilities on these files
    pytorch = load_predictor(folder, tta=False)
    probs = np.concatenate([p.ravel() for path in list_sources(sources) for p in file_probs(path, pytorch)[1]])
    threshold = ["--threshold", str(safe_threshold(probs))]
    onnx_out, torch_out = tmp_path / "onnx", tmp_path / "torch"
    result = run("--model", str(out / "model.onnx"), "--source", str(sources), "--out", str(onnx_out), *threshold,
                 code=NO_TORCH)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert "onnxruntime" in result.stderr  # the log line names the runtime
    result = run("stages.predict", "--model", str(folder), "--source", str(sources), "--out", str(torch_out), *threshold,
                 "--amp", "off")  # fp32, as the ONNX graph runs
    assert result.returncode == 0, result.stderr
    assert "PyTorch on cpu, 3 fold(s)" in result.stderr
    shapes = {"odd_mask.png": (61, 77), "colour_mask.png": (40, 50), "x_mask.png": (48, 48)}
    masks = []
    for name, shape in shapes.items():
        ours, theirs = (cv2.imread(str(o / name), cv2.IMREAD_UNCHANGED) for o in (onnx_out, torch_out))
        assert ours.shape == shape and np.array_equal(ours, theirs), name
        masks.append(ours.ravel() > 0)
    ours, theirs = (nib.load(o / "ct_mask.nii.gz") for o in (onnx_out, torch_out))
    assert ours.shape == nib.load(sources / "ct.nii.gz").shape and np.allclose(ours.affine, theirs.affine)
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    masks.append(np.asarray(ours.dataobj).ravel() > 0)
    assert 0.2 < np.concatenate(masks).mean() < 0.8  # both classes: the equality says something


def test_help_and_one_clear_line_for_bad_models(tmp_path):
    result = run("stages.export", "--help")
    assert result.returncode == 0 and "--model" in result.stdout and "k-fold" in result.stdout
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    mixed = kfold_folder(tmp_path / "mixed", folds=2)
    save_tiny(mixed / "fold_1" / "best.pt", "attn_unet")
    cases = {bad: f"error: {bad}: not a loadable checkpoint",
             tmp_path / "missing.pt": f"error: {tmp_path / 'missing.pt'}: checkpoint not found",
             mixed: f"error: {mixed / 'fold_1' / 'best.pt'}: model='attn_unet' differs"}
    for model, expected in cases.items():
        result = run("stages.export", "--model", str(model), "--out", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(expected)
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
