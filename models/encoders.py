"""Encoders by name: whether segmentation-models-pytorch or timm (`tu-` prefix) knows one, the one
input side a fixed-size encoder takes, and its weights: 'imagenet' when asked for and reachable,
one typed error otherwise (the pipeline turns both into a line naming its params key)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn


class WeightsUnavailable(RuntimeError):
    """Pretrained encoder weights were asked for and cannot be downloaded or found in the cache."""


def with_weights(build: Callable[[str | None], nn.Module], pretrained: bool | str) -> nn.Module:
    """Call `build(weights)`; a failed weight download becomes WeightsUnavailable."""
    weights = "imagenet" if pretrained == "imagenet" else None
    try:
        return build(weights)
    except (OSError, RuntimeError, ValueError) as err:
        if weights is None:
            raise
        raise WeightsUnavailable(f"the encoder weights cannot be downloaded ({type(err).__name__})") from err


def known_encoder(name: str) -> bool:
    """An smp encoder name, or `tu-` and a timm model name (a pretrained tag after a dot allowed)."""
    if name.startswith("tu-"):
        import timm

        return timm.is_model(name[3:])
    import segmentation_models_pytorch as smp

    return name in smp.encoders.get_encoder_names()


def fixed_input_side(name: str) -> int | None:
    """The one input side a `tu-` encoder takes (transformers whose position tables or windows are
    built for one size, e.g. Swin and ViT at 224, as timm's `fixed_input_size` says), else None."""
    if not name.startswith("tu-"):
        return None
    import timm

    cfg = timm.models.get_pretrained_cfg(name[3:])
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return None
    return int(cfg.input_size[-1])
