"""Every number in params.yaml is checked the same way (issue 18): NaN and inf refused wherever a
number is read, an int where a float goes through the same range check, and whatever a key holds
(wrong type, out of range, NaN, inf, text, lists) the loader answers with the section or one
`error:`-ready line naming the key, never another exception. Model params are checked against
what the network trains with (batch size, encoder name, a fixed input size)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.errors import MedsegError
from medseg.networks import check_model_params, training_batch
from medseg.params import Section, Spec, TrainParams, is_number
from medseg.params_reference import all_sections
from medseg.plans import REAL_FRACTIONS, write_plan
from tests.conftest import REPO

SECTIONS = all_sections()
SCHEMAS: dict[str, dict[str, Any]] = {name: section.schema() for name, section in SECTIONS.items()}
SHIPPED = yaml.safe_load((REPO / "params.yaml").read_text())


def leaves(schema: dict[str, Any], prefix: str) -> list[tuple[str, Spec]]:
    out = []
    for key, spec in schema.items():
        out += leaves(spec, f"{prefix}.{key}") if isinstance(spec, dict) else [(f"{prefix}.{key}", spec)]
    return out


KEYS = [(section, dotted, spec) for section, schema in SCHEMAS.items() for dotted, spec in leaves(schema, section)]
FLOAT_KEYS = [(s, d, spec) for s, d, spec in KEYS if float in (spec.kind if isinstance(spec.kind, tuple) else (spec.kind,))]


def edited(dotted: str, value: Any) -> dict[str, Any]:
    params = yaml.safe_load(yaml.safe_dump(SHIPPED))
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        if node[part] == "auto":  # a mapping shipped as `auto` (split.fractions): edit an explicit one
            node[part] = dict(REAL_FRACTIONS)
        node = node[part]
    node[leaf] = value
    return params


def load(tmp: Path, section: str, params: dict[str, Any]) -> Section:
    """The section loaded as a stage loads it, plus the model checks the train stage runs (batch 16, 96 px)."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    values = SECTIONS[section].load(path)
    if section.startswith("models."):
        check_model_params(section.split(".")[1], values.as_dict(), 16, 96)
    return values


def refusal(tmp: Path, section: str, params: dict[str, Any]) -> str | None:
    """The one-line message of a refusal, None when accepted; any other exception fails the test."""
    try:
        load(tmp, section, params)
    except MedsegError as err:
        message = str(err)
        assert "\n" not in message and message.startswith("params.yaml: "), message
        return message
    return None


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**15, max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["auto", "1e-4", "-1e3", ".nan", "nan", "inf", "", "tu-swin_base_patch4_window7_224", "resnet19"]),
    st.lists(st.one_of(st.integers(min_value=-3, max_value=70_000), st.floats(allow_nan=True)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=JUNK)
def test_any_value_of_any_key_is_accepted_or_one_line_naming_it(tmp_path, key, value):
    section, dotted, spec = key
    message = refusal(tmp_path, section, edited(dotted, value))
    if message is None:  # accepted: then it is a finite number where a number is read
        accepted = load(tmp_path, section, edited(dotted, value))
        parts = dotted.split(".")[len(section.split(".")):]
        leaf = getattr(accepted, parts[0])
        for part in parts[1:]:
            leaf = leaf[part]
        assert not (is_number(leaf) and not math.isfinite(leaf)), (dotted, leaf)
        for item in leaf if isinstance(leaf, list) else []:
            assert not (is_number(item) and not math.isfinite(item))
        return
    named = {dotted, dotted.rsplit(".", 1)[0], section}  # the key, or its group / section in a cross-key rule
    assert any(f"{name}" in message for name in named) or "train.batch_size" in message, (dotted, value, message)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS, ids=[d for _, d, _ in FLOAT_KEYS])
def test_nan_and_inf_are_refused_wherever_a_number_is_read(tmp_path, key, bad):
    section, dotted, _ = key
    message = refusal(tmp_path, section, edited(dotted, bad))
    assert message is not None and f"{dotted}=" in message and "finite" in message, message


RANGED = [(s, d, spec) for s, d, spec in FLOAT_KEYS if spec.low is not None or spec.high is not None]


@pytest.mark.parametrize("key", RANGED, ids=[d for _, d, _ in RANGED])
def test_an_int_goes_through_the_float_range_check(tmp_path, key):
    section, dotted, spec = key
    outside = int(math.floor(spec.low)) - 1 if spec.low is not None else int(math.ceil(spec.high)) + 1
    message = refusal(tmp_path, section, edited(dotted, outside))
    assert message is not None and f"{dotted}={outside} is out of range" in message, message


@pytest.mark.parametrize("dotted, value, needle", [
    ("evaluate.threshold", 1, "evaluate.threshold=1 is not allowed"),  # before: accepted, while 1.0 was refused
    ("evaluate.threshold", 0, "evaluate.threshold=0 is not allowed"),
    ("train.lr", 0, "train.lr=0 is out of range (0, 10]"),
    ("train.threshold", 0.0, "train.threshold=0.0 is out of range (0, 1)"),
    ("balance.pos_repeat", 0, "balance.pos_repeat=0 is out of range (0, 100]"),
    ("split.fractions", {"train": 0.8, "val": 0.0, "test": 0.2}, "split.fractions.val=0.0 leaves the val split empty"),
    ("split.fractions", {"train": 0.0, "val": 0.4, "test": 0.6}, "split.fractions.train=0.0 leaves the train split"),
    ("split.fractions", {"train": 0.5, "val": 0.5, "test": 0}, "split.fractions.test=0 leaves the test split empty"),
    ("loss", {"type": "weighted_ce", "pos_weight": 0, "tversky_alpha": 0.3, "tversky_beta": 0.7, "focal_gamma": 2},
     "loss.pos_weight=0 must be > 0 with loss.type=weighted_ce"),
    ("loss", {"type": "tversky", "pos_weight": 1, "tversky_alpha": 0, "tversky_beta": 0.0, "focal_gamma": 2},
     "loss.tversky_alpha + loss.tversky_beta must be > 0"),
    ("loss", {"type": "focal_tversky", "pos_weight": 1, "tversky_alpha": 0.3, "tversky_beta": 0.7, "focal_gamma": 0},
     "loss.focal_gamma=0 must be > 0 with loss.type=focal_tversky"),
])
def test_values_that_would_fail_later_are_refused(tmp_path, dotted, value, needle):
    section = dotted if dotted in SCHEMAS else next(s for s in SCHEMAS if dotted.startswith(f"{s}."))
    message = refusal(tmp_path, section, edited(dotted, value))
    assert message is not None and needle in message, message


def test_val_fraction_0_is_fine_with_folds(tmp_path):
    params = edited("split.fractions", {"train": 0.4, "val": 0.0, "test": 0.6})
    params["split"]["folds"] = 3
    assert refusal(tmp_path, "split", params) is None


def test_exponent_without_a_dot_is_a_float(tmp_path):
    """YAML 1.1 reads 1e-4 as text; DVC (`-S train.lr=1e-4`, YAML 1.2) as a number: both mean 1e-4."""
    params = edited("train.lr", "1e-4")
    assert load(tmp_path, "train", params).lr == pytest.approx(1e-4)
    assert "has the wrong type" in refusal(tmp_path, "train", edited("train.lr", "fast"))


@pytest.mark.parametrize("name, params, batch, size, needle", [
    ("deeplab", {"encoder": "resnet18"}, 1, 96, "train.batch_size=1 is too small for deeplab"),
    ("upernet", {"encoder": "resnet18"}, 1, 96, "train.batch_size=1 is too small for upernet"),
    ("deeplab", {"encoder": "resnet19"}, 16, 96, "models.deeplab.encoder='resnet19' is not an encoder"),
    ("upernet", {"encoder": "tu-not_a_timm_model"}, 16, 96, "models.upernet.encoder='tu-not_a_timm_model' is not"),
    ("upernet", {"encoder": "tu-swin_base_patch4_window7_224"}, 16, 96, "takes 224x224 inputs only"),
    ("upernet", {"encoder": "tu-vit_small_patch16_384"}, 16, 256, "takes 384x384 inputs only"),
])
def test_model_params_against_what_the_network_trains_with(name, params, batch, size, needle):
    with pytest.raises(MedsegError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        check_model_params(name, params, batch, size)


@pytest.mark.parametrize("name, params, batch, size", [
    ("unet", {"width": 4}, 1, 96),  # no BatchNorm after a global pooling: a batch of one trains
    ("upernet", {"encoder": "tu-swin_base_patch4_window7_224"}, 2, 224),
    ("upernet", {"encoder": "tu-swin_base_patch4_window7_224"}, 2, 200),  # padded to 224
    ("upernet", {"encoder": "tu-swin_base_patch4_window7_224"}, 2, None),  # not converted yet: train checks again
    ("deeplab", {"encoder": "tu-convnext_tiny.fb_in22k"}, 2, 96),  # a pretrained tag after the dot
    ("deeplab", {"encoder": "resnet18"}, 2, 96),
])
def test_model_params_that_train_are_accepted(name, params, batch, size):
    check_model_params(name, params, batch, size)


def test_an_auto_batch_is_checked_as_the_plan_resolves_it(tmp_path):
    train = TrainParams.load(REPO / "params.yaml")
    assert train.batch_size == "auto" and training_batch(train, tmp_path) is None  # before convert: train checks later
    write_plan(tmp_path, {"values": {"train.batch_size": {"value": 1, "why": "test"}}})
    assert training_batch(train, tmp_path) == 1
    with pytest.raises(MedsegError, match=r"train\.batch_size=1 is too small for deeplab"):
        check_model_params("deeplab", {"encoder": "resnet18"}, training_batch(train, tmp_path), 96)
    assert training_batch(train.with_values(batch_size=4), tmp_path) == 4  # explicit: the plan is not read
