"""medseg.activations on tiny untrained networks of the four architectures: the encoder stages it
finds are the networks' own (checked against calling the blocks by hand), cropped to the image;
the attention coefficients are the gates' own and lie in [0, 1]; Grad-CAM comes per stage; and
medseg.plots.map_grid draws them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medseg.activations import attention_gates, core, covering, encoder_maps, look_inside
from medseg.errors import MedsegError
from medseg.inference import model_batch
from medseg.plots import map_grid
from models import build_model
from tests.tiny_models import TINY

H, W = 40, 44  # not a multiple of 16 or 32: the padding wrapper pads, the maps are cropped back
MONAI_SHAPES = [(40, 44), (20, 22), (10, 11), (5, 6), (3, 3)]  # padded 48x48: 48, 24, 12, 6, 3
EXPECTED = {  # model -> (stage shapes, stage channels, attention gates)
    "unet": (MONAI_SHAPES, [4, 8, 16, 32, 64], 0),
    "attn_unet": (MONAI_SHAPES, [4, 8, 16, 32, 64], 4),
    "deeplab": ([(20, 22), (10, 11), (5, 6), (3, 3), (3, 3)], [64, 64, 128, 256, 512], 0),  # output stride 16
    "upernet": ([(20, 22), (10, 11), (5, 6), (3, 3), (2, 2)], [64, 64, 128, 256, 512], 0),  # padded 64x64
}


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, 1, **TINY[name]).eval()


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 1), dtype=np.uint8)


def lesion() -> np.ndarray:
    region = np.zeros((H, W), bool)
    region[12:22, 14:26] = True
    return region


@torch.no_grad()
def stages_by_hand(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The encoder features computed by calling the network's own blocks, on the padded input."""
    net, m = core(model), model.multiple
    x = F.pad(x, (0, -x.shape[-1] % m, 0, -x.shape[-2] % m))
    if hasattr(net, "encoder"):
        return net.encoder(x)[1:]
    if hasattr(net, "down_1"):
        out = [net.conv_0(x)]
        for block in (net.down_1, net.down_2, net.down_3, net.down_4):
            out.append(block(out[-1]))
        return out
    out, layer = [net.model[0](x)], net.model[1]  # AttentionUnet: head, then each layer's down ConvBlock
    while True:
        down = layer.submodule if not isinstance(layer.submodule, torch.nn.Sequential) else layer.submodule[0]
        out.append(down(out[-1]))
        if not isinstance(layer.submodule, torch.nn.Sequential):
            return out
        layer = layer.submodule[1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_encoder_stages_are_the_networks_own_cropped_to_the_image(name):
    model, img = tiny(name), image()
    shapes, channels, gates = EXPECTED[name]
    inside = look_inside(model, img)
    assert [s.shape for s in inside.stages] == shapes
    assert inside.channels == channels
    assert len(inside.gates) == gates and inside.cams == []
    padded = (math.ceil(H / model.multiple) * model.multiple, math.ceil(W / model.multiple) * model.multiple)
    by_hand = stages_by_hand(model, model_batch(img[None], torch.device("cpu")))
    assert len(by_hand) == len(shapes)
    for got, feature in zip(inside.stages, by_hand):
        np.testing.assert_allclose(got, covering(feature, (H, W), padded)[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_attention_coefficients_are_each_gates_sigmoid_in_0_1_finest_first():
    model, img = tiny("attn_unet"), image(1)
    blocks = [m for m in core(model).modules() if type(m).__name__ == "AttentionBlock"]
    gated: list[tuple[torch.Tensor, torch.Tensor]] = []  # (skip x, x * psi) of every gate, as the net runs it
    hooks = [b.register_forward_hook(lambda _m, _a, kwargs, out: gated.append((kwargs["x"], out)), with_kwargs=True)
             for b in blocks]  # MONAI's AttentionLayer calls its gate as attention(g=..., x=...)
    x = model_batch(img[None], torch.device("cpu"))
    _, _, gates = encoder_maps(model, x)
    for hook in hooks:
        hook.remove()
    assert len(gated) == len(gates) == len(blocks) == len(attention_gates(core(model))) == 4
    assert [g.shape[-2:] for g in gates] == [(48, 48), (24, 24), (12, 12), (6, 6)]
    for g in gates:
        assert g.shape[:2] == (1, 1) and float(g.min()) >= 0 and float(g.max()) <= 1
        assert float(g.max() - g.min()) > 0  # a map, not a constant
    for skip, out in gated:  # the gate multiplies its skip by exactly the recorded coefficients
        coeff = next(g for g in gates if g.shape[-1] == skip.shape[-1])
        torch.testing.assert_close(out, skip * coeff)
    inside = look_inside(model, img)
    assert [g.shape for g in inside.gates] == MONAI_SHAPES[:4]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grad_cam_per_stage_in_0_1_at_the_image_size(name):
    inside = look_inside(tiny(name), image(2), lesion())
    assert len(inside.cams) == len(EXPECTED[name][0])
    for cam in inside.cams:
        assert cam is not None and cam.shape == (H, W)
        assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert any(cam.max() > 0 for cam in inside.cams)
    top, bottom = inside.panels()
    assert len(top) == len(inside.stages) + len(inside.gates) and len(bottom) == len(inside.cams)


def test_grad_cam_layer_of_an_smp_encoder_is_the_stage_not_one_of_its_blocks():
    model = tiny("deeplab")
    _, modules, _ = encoder_maps(model, model_batch(image()[None], torch.device("cpu")))
    encoder = core(model).encoder
    assert modules[1:] == [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]


def test_grad_cam_follows_the_region():
    """The CAM of a region is not the CAM of another: the target is the region's logits."""
    model, img = tiny("unet"), image(3)
    other = np.zeros((H, W), bool)
    other[30:38, 2:10] = True
    a, b = look_inside(model, img, lesion()).cams, look_inside(model, img, other).cams
    assert any(not np.allclose(x, y) for x, y in zip(a, b))


def test_covering_crops_the_padding():
    t = torch.arange(36.0).reshape(1, 1, 6, 6)  # a stride-8 map of a 48x48 padded input of a 40x44 image
    assert covering(t, (40, 44), (48, 48)).shape[-2:] == (5, 6)
    assert covering(t, (48, 48), (48, 48)).shape[-2:] == (6, 6)


def test_an_unknown_network_is_one_clear_error():
    with pytest.raises(MedsegError, match="no encoder stages known for Conv2d"):
        look_inside(torch.nn.Conv2d(1, 1, 3, padding=1), image())


def test_map_grid_writes_one_row_per_slice_and_a_column_per_map(tmp_path):
    img, region = image(4), lesion()
    top, bottom = look_inside(tiny("attn_unet"), img, region).panels()
    rows = [("best", img, region.astype(np.uint8), top), ("Grad-CAM", None, region.astype(np.uint8), bottom)]
    path = tmp_path / "features.png"
    map_grid(rows, "attn_unet", path, gates=True)
    columns = 1 + 5 + 4  # the slice, 5 stages, 4 gates: 1.75 in each would be 1,750 px; squeezed into 1,350
    cell = 13.5 / columns
    with Image.open(path) as png:
        assert png.size == (1350, round((1.1 * cell * 2 + 0.5) * 100))
        assert np.asarray(png.convert("L")).std() > 10  # drawn, not blank
