"""Encoder weights: 'imagenet' when asked for and reachable, a clear one-line error otherwise."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medseg.errors import MedsegError


def with_weights(build: Callable[[str | None], nn.Module], pretrained: bool | str, key: str) -> nn.Module:
    """Call `build(weights)`; turn a failed weight download into a MedsegError naming `key`."""
    weights = "imagenet" if pretrained == "imagenet" else None
    try:
        return build(weights)
    except (OSError, RuntimeError, ValueError) as err:
        if weights is None:
            raise
        raise MedsegError(
            f"params.yaml: {key}=imagenet but the encoder weights cannot be downloaded "
            f"({type(err).__name__}); set it to false or run online once to fill the cache"
        ) from err
