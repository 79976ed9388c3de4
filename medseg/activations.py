"""What a network computes inside, read by forward hooks on the unchanged network: the mean
activation (over channels) of each encoder stage, the attention coefficients of every gate of
MONAI's AttentionUnet, and a Grad-CAM (pytorch-grad-cam) of the foreground logits over a region.

Encoder stages: for the smp networks (DeepLabv3+, UPerNet) the multi-scale features their encoder
returns (less smp's first entry, the input itself); for MONAI's BasicUNet `conv_0` and `down_1..4`;
for MONAI's AttentionUnet its ConvBlocks (the head and each down step). Every map is cropped to
the part that covers the image (models.padding pads the input up to the network's multiple).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.inference import model_batch
from models.padding import PadToMultiple, padded_side


Panel = tuple[str, np.ndarray, bool] | None


@dataclass
class Inside:
    """One slice seen from inside one network; every map is (h, w) float32 at its own resolution."""

    stages: list[np.ndarray]  # mean over channels of each encoder stage, finest first
    channels: list[int]  # channels of each stage
    gates: list[np.ndarray]  # attention coefficients in [0, 1], one per gate, finest first (AttentionUnet only)
    cams: list[np.ndarray | None]  # Grad-CAM at each stage, (H, W) in [0, 1]; None: no module outputs
    #                                the stage; empty when not asked for

    def panels(self) -> tuple[list[Panel], list[Panel]]:
        """Two figure rows: each stage's mean then each gate; under them each stage's Grad-CAM.
        A panel is (title, map, on a fixed 0-1 scale over the image), None an empty cell."""
        top: list[Panel] = [(f"stage {k} mean\n{m.shape[0]}x{m.shape[1]}, {c} ch", m, False)
                            for k, (m, c) in enumerate(zip(self.stages, self.channels), 1)]
        top += [(f"gate on stage {k}\n{g.shape[0]}x{g.shape[1]}", g, True) for k, g in enumerate(self.gates, 1)]
        bottom: list[Panel] = [None if cam is None else
                               (f"Grad-CAM stage {k}" + ("\n(all 0)" if cam.max() <= 0 else ""), cam, True)
                               for k, cam in enumerate(self.cams, 1)]
        return top, bottom


def core(model: nn.Module) -> nn.Module:
    """The network inside the padding wrapper that models.build_model puts around it."""
    return model.net if isinstance(model, PadToMultiple) else model


def is_smp(net: nn.Module) -> bool:
    from segmentation_models_pytorch.base import SegmentationModel

    return isinstance(net, SegmentationModel)


def monai_stages(net: nn.Module) -> list[nn.Module]:
    """The down-path blocks of a MONAI BasicUNet or AttentionUnet, shallowest first."""
    from monai.networks.nets import AttentionUnet, BasicUNet
    from monai.networks.nets.attentionunet import ConvBlock

    if isinstance(net, BasicUNet):
        return [net.conv_0, net.down_1, net.down_2, net.down_3, net.down_4]
    if isinstance(net, AttentionUnet):
        return [m for m in net.modules() if isinstance(m, ConvBlock)]  # definition order = depth order
    raise MedsegError(f"no encoder stages known for {type(net).__name__}")


def attention_gates(net: nn.Module) -> list[nn.Module]:
    """The sigmoid of every attention gate (MONAI AttentionBlock.psi ends in it); none elsewhere."""
    from monai.networks.nets.attentionunet import AttentionBlock

    return [m.psi[-1] for m in net.modules() if isinstance(m, AttentionBlock)]


def covering(t: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """The part of map `t` (…, h, w) of a padded input that covers the original `size`."""
    h, w = t.shape[-2:]
    return t[..., : math.ceil(h * size[0] / padded[0]), : math.ceil(w * size[1] / padded[1])]


def padded_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    m = model.multiple if isinstance(model, PadToMultiple) else 1
    return padded_side(size[0], m), padded_side(size[1], m)


def copied(out: Any) -> Any:
    """A detached copy of a module output (a tensor or a list of them): a later in-place op must not
    change what was seen."""
    return out.detach().clone() if isinstance(out, torch.Tensor) else [t.detach().clone() for t in out]


@torch.no_grad()
def run_watched(model: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> list[tuple[nn.Module, Any, Any]]:
    """One forward pass of `x`: for each watched module run, in the order they finish, the module,
    its output and a copy of that output."""
    done: list[tuple[nn.Module, Any, Any]] = []
    hooks = [m.register_forward_hook(lambda m, _i, out: done.append((m, out, copied(out)))) for m in modules]
    try:
        model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return done


def encoder_maps(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[nn.Module | None],
                                                               list[torch.Tensor]]:
    """(the encoder stage outputs (1, C, h, w), shallowest first; the module that outputs each, the
    Grad-CAM layer, or None where none does; the attention coefficients (1, 1, h, w), finest first)."""
    net = core(model)
    gate_set = attention_gates(net)
    if is_smp(net):
        done = run_watched(model, x, [*net.encoder.modules(), *gate_set])
        out, copies = next((o, c) for m, o, c in done if m is net.encoder)
        kept = [(o, c) for o, c in zip(out[1:], copies[1:]) if o.shape[1] > 0]  # smp: [input, stage 1, ...]
        stages = [c for _, c in kept]
        # the outermost module whose output is the feature itself finishes last (resnet: `layer4`, not its blocks)
        modules = [next((m for m, o, _ in reversed(done) if o is f), None) for f, _ in kept]
    else:
        watched = monai_stages(net)
        done = run_watched(model, x, [*watched, *gate_set])
        stages = [c for m, _, c in done if any(m is w for w in watched)]
        modules = list(watched)
    gates = [c for m, _, c in done if any(m is g for g in gate_set)]
    if not stages:
        raise MedsegError(f"{type(net).__name__}: no encoder stage ran")
    return stages, modules, sorted(gates, key=lambda g: -g.shape[-1])


def grad_cam(model: nn.Module, x: torch.Tensor, region: np.ndarray, layer: nn.Module) -> np.ndarray:
    """Grad-CAM at `layer` of the foreground logits summed over `region` (H, W): where the layer's
    features raise the score of that region; (H, W) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    target = SemanticSegmentationTarget(0, region.astype(np.float32))
    with GradCAM(model=model.eval(), target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[target])[0].astype(np.float32)


def look_inside(model: nn.Module, image: np.ndarray, region: np.ndarray | None = None) -> Inside:
    """`image` (H, W, C) uint8 through `model` on the CPU; with `region` (H, W) bool also the Grad-CAM
    of that region at every encoder stage."""
    model = model.cpu()
    x = model_batch(image[None], torch.device("cpu"))
    size = image.shape[:2]
    padded = padded_size(model, size)
    stages, modules, gates = encoder_maps(model, x)
    cams = [] if region is None else [None if m is None else grad_cam(model, x, region, m) for m in modules]
    return Inside(stages=[covering(s, size, padded)[0].float().mean(0).numpy() for s in stages],
                  channels=[s.shape[1] for s in stages],
                  gates=[covering(g, size, padded)[0, 0].float().numpy() for g in gates], cams=cams)
