"""ONNX export: onnxruntime's probabilities match PyTorch's (fp32, CPU) for every network and for a
k-fold ensemble, on phantom CT slices at the model's size and at an odd size, at any batch size."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.onnx_export import AveragingPool2d, MeanProbability, check_parity, metadata, onnx_graph
from medseg.onnx_runtime import OnnxModel
from medseg.prediction import model_inputs, unit_images
from medseg.model_loader import load_trained
from models import MODEL_NAMES, build_model
from tests.tiny_models import PRE, TINY, kfold_folder, safe_threshold, save_tiny

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def slices(make_phantom) -> list[np.ndarray]:
    """Phantom CT slices as predict feeds them (48 px), and the same slices resized to an odd 37 x 101
    (padded to 64 x 128: UPerNet's deepest features are 2 x 4 there, 2 x 2 in the export's example)."""
    raw = make_phantom("msd", cases=1, depth=6, size=48, seed=0)
    images = model_inputs(unit_images(raw / "imagesTr" / "phantom_000.nii.gz", PRE), PRE)
    odd = np.stack([cv2.resize(im, (101, 37), interpolation=cv2.INTER_AREA)[..., None] for im in images])
    return [images, odd]


def assert_parity(trained, slices: list[np.ndarray], tta: bool = False) -> tuple[bytes, OnnxModel]:
    graph = onnx_graph(trained)
    session = OnnxModel(graph, metadata(trained, None))
    for images in slices:
        ours = trained.probs(images, CPU, tta=tta)
        for batch in (32, 4):  # one batch of 6, then 4 + 2: the batch dimension is dynamic
            theirs = session.probs(images, tta=tta, batch_size=batch)
            assert theirs.shape == ours.shape == images.shape[:3]
            assert np.abs(theirs - ours).max() <= 1e-4
            threshold = safe_threshold(ours)
            assert np.array_equal(theirs >= threshold, ours >= threshold)
            assert 0.2 < (ours >= threshold).mean() < 0.8  # masks with both classes, not trivially equal
    return graph, session


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_probabilities_match_pytorch(name, slices, tmp_path):
    assert_parity(load_trained(save_tiny(tmp_path / "best.pt", name)), slices)


def test_kfold_ensemble_graph_matches_pytorch_ensemble(slices, tmp_path):
    folder = kfold_folder(tmp_path / "unet", folds=3)
    trained = load_trained(folder)
    assert trained.card.folds == 3 and trained.card.threshold.value == pytest.approx(0.42)
    graph, session = assert_parity(trained, slices, tta=True)
    images = slices[0]
    single = load_trained(folder / "fold_0" / "best.pt").probs(images, CPU)
    assert np.abs(session.probs(images) - single).max() > 1e-3  # the graph averages folds, it is not fold 0
    with pytest.raises(MedsegError, match="disagrees with PyTorch"):  # the ensemble's graph is not fold 0's
        check_parity(load_trained(folder / "fold_0" / "best.pt"), graph, metadata(trained, None))


@pytest.mark.parametrize("size", [1, 2, 3, 6, (2, 5)])
def test_averaging_pool_is_adaptive_average_pooling(size):
    pool = AveragingPool2d(size if isinstance(size, tuple) else (size, size))
    rng = torch.Generator().manual_seed(0)
    for h, w in [(1, 1), (2, 2), (3, 3), (4, 2), (7, 13), (12, 5), (20, 20)]:
        x = torch.rand(2, 3, h, w, generator=rng)
        assert torch.allclose(pool(x), F.adaptive_avg_pool2d(x, size), atol=1e-6), (h, w)


def test_upernet_pyramid_pools_are_replaced_in_the_export_copy_only():
    model = build_model("upernet", 1, **TINY["upernet"])
    graph = MeanProbability([model])
    pooled = [m.size for m in graph.modules() if isinstance(m, AveragingPool2d)]
    assert sorted(pooled) == [(2, 2), (3, 3), (6, 6)]  # PSP sizes 2, 3, 6; the global (1 x 1) pool is kept
    assert not any(isinstance(m, AveragingPool2d) for m in model.modules())
