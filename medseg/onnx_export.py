"""A trained model (one checkpoint or a k-fold ensemble) as one ONNX graph with dynamic batch, height
and width, plus the model.json that predict needs to run it without PyTorch.

Hand-written: torch.onnx's dynamo exporter does the work, but the networks are rewritten in two places
so that height and width stay symbolic: PadToMultiple's padding in a form torch.export can reason
about, and adaptive average pooling (UPerNet's pyramid pooling) as averaging matrices, because the
exporter bakes the example's pooling kernel into the graph.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import MedsegError, first_line
from medseg.onnx_runtime import FORMAT, INPUT, OUTPUT, UINT8_DIVISOR, OnnxModel
from medseg.preprocess import (channel_ranges, dicom_unit_range, modality, model_input, normalise_volume,
                               rescale_channels, unit_image)
from medseg.model_loader import TrainedModel
from models.padding import PadToMultiple, padded_side

OPSET = 18  # the opset torch.onnx's dynamo exporter writes natively (>= 17: LayerNormalization)
EXAMPLE_HW = (37, 45)  # odd, unequal sides, so no shape can be mistaken for a constant
MAX_DIFF = 1e-4  # the export is refused when onnxruntime and PyTorch disagree by more than this


class AveragingPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d(size) as P_h @ x @ P_w^T, with PyTorch's bins [floor(i n / s), ceil((i + 1) n / s))
    built from the input's own size: exact at every size the graph will see."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    @staticmethod
    def weights(n: int, s: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(s, device=like.device).unsqueeze(1)
        j = torch.arange(n, device=like.device).unsqueeze(0)
        start, end = (i * n) // s, ((i + 1) * n + s - 1) // s
        return ((j >= start) & (j < end)).to(like.dtype) / (end - start).to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.weights(h, self.size[0], x) @ x @ self.weights(w, self.size[1], x).transpose(0, 1)


def with_exact_pooling(net: nn.Module) -> nn.Module:
    """`net` with every adaptive average pool to more than 1 x 1 replaced by AveragingPool2d."""
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            size = child.output_size if isinstance(child, nn.AdaptiveAvgPool2d) else None
            size = (size, size) if isinstance(size, int) else size
            if size is not None and None not in size and tuple(size) != (1, 1):
                setattr(parent, name, AveragingPool2d(tuple(size)))
    return net


class MeanProbability(nn.Module):
    """The mean of the members' sigmoid outputs (softmax over the channels for `exclusive` classes),
    each padded as PadToMultiple pads it (copies: the members themselves are left as they are)."""

    def __init__(self, members: list[nn.Module], exclusive: bool = False) -> None:
        super().__init__()
        if not all(isinstance(m, PadToMultiple) for m in members):
            raise TypeError("members must be models.build_model networks (PadToMultiple)")
        self.nets = nn.ModuleList(with_exact_pooling(copy.deepcopy(m.net)) for m in members)
        self.multiple = members[0].multiple
        self.exclusive = exclusive

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = self.multiple
        padded = F.pad(x, (0, padded_side(w, k) - w, 0, padded_side(h, k) - h))
        activate = (lambda t: torch.softmax(t, dim=1)) if self.exclusive else torch.sigmoid
        prob = torch.stack([activate(net(padded)) for net in self.nets]).mean(0)
        # index_select, not a slice: slicing makes torch.export branch on whether any padding was added
        return prob.index_select(2, torch.arange(h)).index_select(3, torch.arange(w))


def onnx_graph(trained: TrainedModel) -> bytes:
    """The serialized ONNX model: input INPUT (N, C, H, W) float32, output OUTPUT (N, channels, H, W)."""
    graph = MeanProbability(trained.members, trained.card.classes.mode == "exclusive").eval()
    example = torch.rand(2, trained.card.header.in_channels, *EXAMPLE_HW, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    for quiet in ("onnxscript", "onnx_ir"):  # their INFO lines list every rewrite of the graph
        logging.getLogger(quiet).setLevel(logging.WARNING)
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes=(dims,), external_data=False,
                                        verbose=False)
    except Exception as err:  # the exporter raises many types; its message is pages long
        raise MedsegError(f"{trained.card.checkpoints[0]}: ONNX export of {trained.card.header.model!r} failed "
                          f"({first_line(err)})") from err
    return program.model_proto.SerializeToString()


def _doc(function) -> str:
    return " ".join(function.__doc__.split())


def metadata(trained: TrainedModel, record: dict | None = None, record_source: str = "none",
             digests: list[str] | None = None) -> dict:
    """model.json: what the graph needs around it, from the checkpoint(s) and medseg.preprocess, with
    the threshold(s) and post-processing evaluate scored the model with (`record`, from
    medseg.scored_post; None: the val threshold alone and no post-processing)."""
    card = trained.card
    header, pre, channels = card.header, card.header.preprocess, card.header.in_channels
    return {
        "format": FORMAT, "model": header.model, "model_params": header.model_params, "in_channels": channels,
        "folds": card.folds, "checkpoints": [str(p) for p in card.checkpoints], "checkpoint_sha256": digests or [],
        "opset": OPSET,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "input": {"name": INPUT, "dtype": "float32", "shape": ["batch", channels, "height", "width"],
                  "divisor": UINT8_DIVISOR, "from_uint8": "the (N, H, W, C) uint8 model input transposed to "
                  "(N, C, H, W), converted to float32 and divided by 255.0"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", trained.card.classes.channels, "height", "width"],
                   "meaning": OUTPUT_MEANING[trained.card.classes.mode]
                              + (f", averaged over {trained.card.folds} folds" if trained.card.folds > 1 else "")},
        **class_record(trained, record),
        "preprocess": pre,
        "ct_window_hu": [pre["window_level"] - pre["window_width"] / 2, pre["window_level"] + pre["window_width"] / 2],
        "steps": {"modality": _doc(modality), "volume": _doc(normalise_volume), "dicom": _doc(dicom_unit_range),
                  "image": _doc(unit_image), "model_input": _doc(model_input),
                  **({"normalize_volume": _doc(channel_ranges) + " " + _doc(rescale_channels)
                      + " predict takes the 2D files of one folder (mask files left out) as the volume."}
                     if pre.get("normalize") == "volume" else {})},
        "threshold": trained.card.threshold.value if record is None or record["threshold"] is None else record["threshold"],
        "threshold_source": trained.card.threshold.source if record is None or record["threshold"] is None
        else f"evaluate's scored threshold ({record_source})",
        "postprocess": record, "postprocess_source": record_source,
    }


OUTPUT_MEANING = {"binary": "foreground probability: the sigmoid of the logits",
                  "exclusive": "per-pixel probabilities of background and each class (softmax over the channels)",
                  "regions": "per-region probability: the sigmoid of each channel's logits"}


def class_record(trained: TrainedModel, record: dict | None = None) -> dict:
    """model.json's classes (none for a binary model): their names, raw label values, mode, how a
    mask is decided from the output, and the order a label map is painted in."""
    classes = trained.card.classes
    if not classes.multi:
        return {}
    exclusive = classes.mode == "exclusive"
    return {"classes": classes.as_json(),
            "class_thresholds": None if exclusive else (record or {}).get("class_thresholds") or trained.card.threshold.per_class,
            "decision": ("argmax over the output channels; channel 0 is background, channel k is class k"
                         if exclusive else "region k where output channel k >= class_thresholds[k]"),
            "painting_order": None if exclusive else list(classes.names)}


def check_parity(trained: TrainedModel, graph: bytes, meta: dict) -> dict:
    """Run onnxruntime and PyTorch on the same random uint8 batches (at preprocess.size and at an odd
    size); refuse the export when their probabilities differ by more than MAX_DIFF."""
    session, rng, diffs = OnnxModel(graph, meta, where=str(trained.card.checkpoints[0])), np.random.default_rng(0), []
    size, channels = meta["preprocess"]["size"], meta["in_channels"]
    for shape in ((2, size, size, channels), (1, *EXAMPLE_HW, channels)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = (trained.class_probs(images, torch.device("cpu")) if trained.card.classes.multi
                else trained.probs(images, torch.device("cpu")))
        diffs.append(float(np.abs(session.probs(images) - ours).max()))
    if max(diffs) > MAX_DIFF:
        raise MedsegError(f"{trained.card.checkpoints[0]}: the ONNX graph disagrees with PyTorch (max |difference| "
                          f"{max(diffs):.2g} > {MAX_DIFF}); not exported")
    return {"max_abs_diff": max(diffs), "sizes": [[size, size], list(EXAMPLE_HW)], "against": "PyTorch fp32 on CPU"}
