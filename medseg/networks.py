"""The pipeline's side of models/: the `models.<name>` params schema read from the networks'
registry, the checks of those params against what the network will be trained with, and building
a network with errors worded for the user (models/ knows no params file)."""
from __future__ import annotations

import json
from dataclasses import make_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from medseg import paths
from medseg.errors import MedsegError, first_line
from medseg.params import PARAMS_FILE, Section, Spec, TrainParams, key
from medseg.plans import read_plan
from models import ARCHITECTURES, MODEL_NAMES, build_model
from models.encoders import WeightsUnavailable, fixed_input_side, known_encoder
from models.padding import padded_side


@cache
def model_section(name: str) -> type[Section]:
    """The typed `models.<name>` section, one frozen dataclass per architecture, its keys and help
    read from the networks' registry (models/ stays free of params code)."""
    arch = ARCHITECTURES[name]
    return make_dataclass(f"{name.title().replace('_', '')}Params",
                          [(k, Any, key(Spec(**{s: v for s, v in spec.items() if s != "help"}), spec.get("help", "")))
                           for k, spec in arch.params.items()],
                          bases=(Section,), frozen=True, namespace={"NAME": f"models.{name}"})


def load_model_params(name: str, path: Path = PARAMS_FILE) -> Section:
    """The validated `models.<name>` section of params.yaml, checked against what the network will
    train with (train.batch_size; the slice size, once data/slices exists) before any work."""
    params = model_section(name).load(path)
    check_model_params(name, params.as_dict(), training_batch(TrainParams.load(path)), converted_size())
    return params


def training_batch(cfg: TrainParams, slices: Path = paths.SLICES) -> int | None:
    """train.batch_size, `auto` resolved by the plan in `slices`; None while no plan exists (before
    `convert`: the train stage checks again once it has resolved the value)."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    try:
        return int(read_plan(slices)["values"]["train.batch_size"]["value"])
    except (MedsegError, KeyError, TypeError, ValueError):
        return None


def converted_size(slices: Path = paths.SLICES) -> int | None:
    """The side of the slices in data/slices (what the network sees), None before `convert` ran."""
    try:
        return int(json.loads((slices / "info.json").read_text())["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_model_params(name: str, params: dict[str, Any], batch_size: int | None, size: int | None) -> None:
    """Refuse, naming the key, what the network would fail on later: a batch too small for its
    BatchNorm, an encoder neither smp nor timm knows, a fixed-size encoder and another slice size."""
    arch = ARCHITECTURES[name]
    if batch_size is not None and batch_size < arch.min_batch:
        raise MedsegError(f"params.yaml: train.batch_size={batch_size} is too small for {name}: "
                          f"{arch.min_batch_why} needs at least {arch.min_batch} images per training batch")
    encoder = params.get("encoder")
    if encoder is None:
        return
    if not known_encoder(encoder):
        raise MedsegError(f"params.yaml: models.{name}.encoder={encoder!r} is not an encoder "
                          "segmentation-models-pytorch knows (e.g. resnet18, resnet50, efficientnet-b0) nor "
                          "'tu-' and a timm model name (e.g. tu-convnext_tiny)")
    side = fixed_input_side(encoder)
    if side is not None and size is not None:
        padded = padded_side(size, arch.multiple)  # models/ pads each side to its multiple
        if padded != side:
            raise MedsegError(f"params.yaml: models.{name}.encoder={encoder!r} takes {side}x{side} inputs only, "
                              f"but data/slices holds {size}x{size} slices (convert.size); set convert.size to "
                              f"{side} or choose an encoder that takes any size (e.g. tu-convnext_tiny)")


def build_network(name: str, in_channels: int, params: dict[str, Any], out_channels: int = 1) -> nn.Module:
    """models.build_model, its errors worded for the user (the params key, the model name)."""
    if name not in MODEL_NAMES:
        raise MedsegError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    try:
        return build_model(name, in_channels, out_channels, **params)
    except WeightsUnavailable as err:
        raise MedsegError(f"params.yaml: models.{name}.pretrained=imagenet but {err}; set it to false "
                          "or run online once to fill the cache") from err
    except Exception as err:  # smp and timm refuse combinations in many types (KeyError, RuntimeError, ...)
        raise MedsegError(f"models.{name} {params}: cannot build the network ({first_line(err, 200)})") from err
