"""medseg.onnx_runtime: the uint8 scaling and layout the graph is fed, and one clear line for a broken export."""
import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from medseg.errors import MedsegError
from medseg.onnx_runtime import FORMAT, OnnxModel, is_export


def sigmoid_graph() -> bytes:
    """A graph that is only the sigmoid of its input (N, 1, H, W), so its output shows what it was fed."""
    shape = ["batch", 1, "height", "width"]
    graph = helper.make_graph([helper.make_node("Sigmoid", ["image"], ["prob"])], "sigmoid",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return model.SerializeToString()


META = {"format": FORMAT, "preprocess": {"size": 8, "channels": 1}, "threshold": 0.5, "in_channels": 1,
        "input": {"name": "image", "divisor": 255.0}, "output": {"name": "prob"}}


@pytest.fixture
def export(tmp_path):
    (tmp_path / "model.onnx").write_bytes(sigmoid_graph())
    (tmp_path / "model.json").write_text(json.dumps(META))
    return tmp_path


def test_probabilities_from_uint8_as_predict_probs_scales_them(export):
    images = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 1), dtype=np.uint8)
    model = OnnxModel.load(export)
    expected = 1 / (1 + np.exp(-(images[..., 0].astype(np.float32) / np.float32(255.0))))
    for batch in (32, 2):
        assert np.allclose(model.probs(images, batch_size=batch), expected, atol=1e-6)
    assert is_export(export) and is_export(export / "model.onnx") and not is_export(export / "best.pt")
    with pytest.raises(MedsegError, match=r"takes 1 channel\(s\), got 3"):
        model.probs(np.zeros((1, 7, 9, 3), np.uint8))


def test_broken_exports_are_one_clear_line(export):
    onnx.checker.check_model(onnx.load_from_string(sigmoid_graph()))  # the fixture itself is a valid model
    (export / "model.json").write_text(json.dumps({**META, "format": "something else"}))
    with pytest.raises(MedsegError, match="model.json: not a medseg ONNX description"):
        OnnxModel.load(export)
    (export / "model.json").write_text(json.dumps({k: v for k, v in META.items() if k != "threshold"}))
    with pytest.raises(MedsegError, match="model.json: lacks threshold"):
        OnnxModel.load(export)
    (export / "model.json").write_text(json.dumps(META))
    (export / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(MedsegError, match="model.onnx: not a loadable ONNX model .*Protobuf parsing failed"):
        OnnxModel.load(export)
    (export / "model.json").unlink()
    with pytest.raises(MedsegError, match="model.json: missing; an ONNX model needs"):
        OnnxModel.load(export / "model.onnx")


@pytest.mark.parametrize(("edit", "needle"), [
    ({"threshold": 1.5}, "threshold=1.5 is not a number in [0, 1]"),
    ({"threshold": float("nan")}, "threshold=nan is not a number in [0, 1]"),
    ({"threshold": "0.5"}, "threshold='0.5' is not a number in [0, 1]"),
    ({"input": {"name": "image", "divisor": 0}}, "input.divisor=0 is not a number > 0"),
    ({"input": {"name": "", "divisor": 255.0}}, "input.name='' is not a graph input name"),
    ({"in_channels": 0}, "in_channels=0 is not a positive integer"),
    ({"preprocess": {"size": -8, "channels": 1}}, "preprocess.size=-8 is not a positive integer"),
    ({"preprocess": {"size": 8}}, "preprocess.channels=None is not a positive integer"),
    ({"preprocess": {"size": 8, "channels": 3}}, "preprocess.channels=3 differs from in_channels=1"),
], ids=["threshold_above_1", "nan_threshold", "text_threshold", "zero_divisor", "empty_input_name",
        "zero_channels", "negative_size", "no_channels", "channels_disagree"])
def test_every_model_json_value_is_range_checked(export, edit, needle):
    """Issue 27, family 3: an edited model.json is one line naming it, before the graph is loaded."""
    (export / "model.json").write_text(json.dumps({**META, **edit}))
    with pytest.raises(MedsegError, match="model.json: " + re.escape(needle)):
        OnnxModel.load(export)


@pytest.mark.parametrize(("edit", "needle"), [
    ({"input": {"name": "x", "divisor": 255.0}}, r"the graph has no input 'x' \(its inputs: 'image'\)"),
    ({"output": {"name": "logits"}}, r"the graph has no output 'logits' \(its outputs: 'prob'\)"),
    ({"in_channels": 3, "preprocess": {"size": 8, "channels": 3}},
     r"the graph's input has shape \['batch', 1, 'height', 'width'\]; model.json describes N x 3 x H x W"),
], ids=["input_name", "output_name", "channels"])
def test_a_graph_that_model_json_does_not_describe_is_refused_before_any_image(export, edit, needle):
    (export / "model.json").write_text(json.dumps({**META, **edit}))
    with pytest.raises(MedsegError, match=r"model\.onnx: " + needle):
        OnnxModel.load(export)


def test_the_cuda_provider_is_used_where_onnxruntime_offers_it():
    from medseg.onnx_runtime import execution_providers

    assert execution_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert execution_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
