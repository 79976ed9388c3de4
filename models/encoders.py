"""Encoder weights: 'imagenet' when asked for and reachable, one typed error otherwise (the
pipeline turns it into a line naming its params key)."""
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
