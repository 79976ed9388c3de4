"""The pipeline's side of models/: the `models.<name>` params schema read from the networks'
registry, and building a network with errors worded for the user (models/ knows no params file)."""
from __future__ import annotations

from typing import Any

from torch import nn

from medseg.errors import MedsegError
from medseg.params import Spec, load_section
from models import ARCHITECTURES, MODEL_NAMES, build_model
from models.encoders import WeightsUnavailable


def model_params_schema(name: str) -> dict[str, Spec]:
    return {key: Spec(**spec) for key, spec in ARCHITECTURES[name].params.items()}


def load_model_params(name: str) -> dict[str, Any]:
    """The validated `models.<name>` section of params.yaml."""
    return load_section(f"models.{name}", schema=model_params_schema(name))


def build_network(name: str, in_channels: int, params: dict[str, Any]) -> nn.Module:
    """models.build_model, its errors worded for the user (the params key, the model name)."""
    if name not in MODEL_NAMES:
        raise MedsegError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    try:
        return build_model(name, in_channels, **params)
    except WeightsUnavailable as err:
        raise MedsegError(f"params.yaml: models.{name}.pretrained=imagenet but {err}; set it to false "
                          "or run online once to fill the cache") from err
