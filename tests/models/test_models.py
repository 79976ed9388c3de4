"""One shared test drives every model: forward, backward, odd sizes, 1/3 channels, save/load."""
import io

import pytest
import torch

from models import build_model

SMALL = {
    "unet": {"width": 8},
    "attn_unet": {"width": 8},
    "deeplab": {"encoder": "resnet18", "decoder_channels": 32, "pretrained": False},
    "upernet": {"encoder": "tu-convnext_atto", "decoder_channels": 32, "pretrained": False},
}


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward_any_size(name, channels):
    torch.manual_seed(0)
    model = build_model(name, channels, **SMALL[name])
    x = torch.randn(2, channels, 64, 64, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, channels, 97, 131)).shape == (1, 1, 97, 131)


@pytest.mark.parametrize("name", SMALL)
def test_save_load_round_trip(name):
    model = build_model(name, 1, **SMALL[name]).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = build_model(name, 1, **SMALL[name]).eval()
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_output_starts_at_rare_foreground_prior():
    model = build_model("unet", 1, width=8).eval()
    with torch.no_grad():
        p = torch.sigmoid(model(torch.zeros(1, 1, 32, 32))).mean().item()
    assert p < 0.2


@pytest.mark.parametrize("name, channels, params, millions", [
    ("unet", 1, {"width": 64}, 31.0),
    ("deeplab", 3, {"encoder": "resnet50", "decoder_channels": 256, "pretrained": False}, 26.7),
])
def test_reference_parameter_counts(name, channels, params, millions):
    count = sum(p.numel() for p in build_model(name, channels, **params).parameters()) / 1e6
    assert count == pytest.approx(millions, rel=0.03)


def test_upernet_takes_seed_001_swin_b_encoder():
    model = build_model("upernet", 3, encoder="tu-swin_base_patch4_window7_224", decoder_channels=64,
                        pretrained=False).eval()
    count = sum(p.numel() for p in model.net.encoder.parameters()) / 1e6
    assert count == pytest.approx(86.7, rel=0.03)  # Swin-B backbone
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1, 224, 224)


def test_pretrained_offline_fails_with_one_clear_line(monkeypatch):
    from medseg.networks import build_network
    from medseg.errors import MedsegError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-medseg-cache")
    with pytest.raises(MedsegError, match=r"models\.deeplab\.pretrained=imagenet but the encoder weights cannot"):
        build_network("deeplab", 3, {"encoder": "resnet18", "decoder_channels": 32, "pretrained": "imagenet"})
