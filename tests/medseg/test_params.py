from pathlib import Path

import pytest
import yaml

from medseg.datasets.registry import DATASET_PARAMS
from medseg.errors import MedsegError
from medseg.losses import LOSS_PARAMS
from medseg.networks import model_params_schema
from medseg.params import SCHEMA, load_section
from models import MODEL_NAMES
from tests.conftest import REPO


def write_params(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


OWNED = {"dataset": DATASET_PARAMS, "loss": LOSS_PARAMS} | {f"models.{m}": model_params_schema(m) for m in MODEL_NAMES}


@pytest.mark.parametrize("section", [*SCHEMA, *OWNED])
def test_shipped_params_are_valid(section):
    assert isinstance(load_section(section, REPO / "params.yaml", OWNED.get(section)), dict)


def test_every_section_of_params_yaml_has_a_schema():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    described = set(SCHEMA) | {s.split(".")[0] for s in OWNED}
    assert set(params) == described
    assert set(params["models"]) == set(MODEL_NAMES)  # the model names come from models/


def test_bad_choice_names_key_and_allowed_values(tmp_path):
    path = write_params(tmp_path, lambda p: p["loss"].update(type="nonsense"))
    with pytest.raises(MedsegError, match=r"loss\.type='nonsense'.*dice_bce"):
        load_section("loss", path, LOSS_PARAMS)


def test_unknown_key_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["train"].update(epochz=3))
    with pytest.raises(MedsegError, match=r"unknown key train\.epochz"):
        load_section("train", path)


def test_wrong_type_and_range(tmp_path):
    path = write_params(tmp_path, lambda p: p["train"].update(epochs="ten"))
    with pytest.raises(MedsegError, match=r"train\.epochs='ten' has the wrong type"):
        load_section("train", path)
    path = write_params(tmp_path, lambda p: p["balance"].update(neg_keep=1.5))
    with pytest.raises(MedsegError, match=r"balance\.neg_keep=1\.5 is out of range"):
        load_section("balance", path)


def test_bool_is_not_an_int(tmp_path):
    path = write_params(tmp_path, lambda p: p["train"].update(epochs=True))
    with pytest.raises(MedsegError, match="wrong type"):
        load_section("train", path)


def test_split_fractions_must_sum_to_one(tmp_path):
    path = write_params(tmp_path, lambda p: p["split"].update(fractions={"train": 0.9, "val": 0.18, "test": 0.6}))
    with pytest.raises(MedsegError, match="sum to 1"):
        load_section("split", path)


def test_missing_key_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["models"]["unet"].pop("width"))
    with pytest.raises(MedsegError, match=r"missing key models\.unet\.width"):
        load_section("models.unet", path, model_params_schema("unet"))


@pytest.mark.parametrize("value", ["sometimes", -1, 2.5])
def test_min_area_is_auto_or_pixels(tmp_path, value):
    path = write_params(tmp_path, lambda p: p["evaluate"].update(min_area=value))
    with pytest.raises(MedsegError, match=r"evaluate\.min_area"):
        load_section("evaluate", path)
    path = write_params(tmp_path, lambda p: p["evaluate"].update(min_area=12))
    assert load_section("evaluate", path)["min_area"] == 12
