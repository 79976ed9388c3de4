from pathlib import Path

import pytest
import yaml

from medseg.errors import MedsegError
from medseg.params import Section, SplitParams, TrainParams
from medseg.params_reference import all_sections
from models import MODEL_NAMES
from tests.conftest import REPO

SECTIONS = all_sections()


def load_section(name: str, path: Path) -> Section:
    """The typed section `name` of params.yaml at `path`, as a stage loads it."""
    return SECTIONS[name].load(path)


def write_params(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("section", list(SECTIONS))
def test_shipped_params_are_valid_and_read_as_attributes(section):
    loaded = load_section(section, REPO / "params.yaml")
    assert isinstance(loaded, SECTIONS[section]) and loaded.NAME == section
    node = yaml.safe_load((REPO / "params.yaml").read_text())
    for part in section.split("."):
        node = node[part]
    assert loaded.as_dict() == node and all(getattr(loaded, k) == v for k, v in node.items())
    with pytest.raises(AttributeError):
        loaded.seed = 1  # frozen: a stage cannot change what it was given


def test_every_section_of_params_yaml_has_a_schema():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params) == {s.split(".")[0] for s in SECTIONS}
    assert set(params["models"]) == set(MODEL_NAMES)  # the model names come from models/


def test_bad_choice_names_key_and_allowed_values(tmp_path):
    path = write_params(tmp_path, lambda p: p["loss"].update(type="nonsense"))
    with pytest.raises(MedsegError, match=r"loss\.type='nonsense'.*dice_bce"):
        load_section("loss", path)


def test_unknown_key_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["train"].update(epochz=3))
    with pytest.raises(MedsegError, match=r"unknown key train\.epochz; did you mean train\.epochs\? known keys"):
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
        load_section("models.unet", path)


@pytest.mark.parametrize("value", ["sometimes", -1, 2.5])
def test_min_area_is_auto_or_pixels(tmp_path, value):
    path = write_params(tmp_path, lambda p: p["evaluate"].update(min_area=value))
    with pytest.raises(MedsegError, match=r"evaluate\.min_area"):
        load_section("evaluate", path)
    path = write_params(tmp_path, lambda p: p["evaluate"].update(min_area=12))
    assert load_section("evaluate", path).min_area == 12


@pytest.mark.parametrize(("edit", "message"), [
    ({"min_lr": 0.01, "lr": 0.003}, r"train\.min_lr=0\.01 exceeds train\.lr=0\.003: the cosine schedule would raise"),
    ({"scheduler": "poly", "min_lr": 0.5, "lr": 0.1}, r"min_lr=0\.5 exceeds train\.lr=0\.1: the poly schedule"),
    ({"warmup_epochs": 12, "epochs": 12}, r"train\.warmup_epochs=12 is not below train\.epochs=12"),
    ({"seed": 2**32}, r"train\.seed=4294967296 is out of range \[0, 4294967295\]"),
])
def test_rules_across_keys_and_at_the_edges(tmp_path, edit, message):
    path = write_params(tmp_path, lambda p: p["train"].update(edit))
    with pytest.raises(MedsegError, match=message):
        load_section("train", path)


def test_the_rules_across_keys_allow_what_they_should(tmp_path):
    # no schedule: min_lr is unused; one epoch with one warm-up epoch is the tiny tests' setting; 2**32 - 1 is a seed
    for edit in ({"scheduler": "none", "min_lr": 1.0, "lr": 0.1}, {"warmup_epochs": 1, "epochs": 1},
                 {"warmup_epochs": 3, "epochs": "auto"}, {"seed": 2**32 - 1}):
        assert load_section("train", write_params(tmp_path, lambda p, e=edit: p["train"].update(e)))


def test_a_planned_epoch_count_is_checked_against_the_warm_up():
    from medseg.plans import resolve

    plan = {"values": {"train.epochs": {"value": 4, "why": "test"}, "train.patience": {"value": 2, "why": "test"},
                       "train.batch_size": {"value": 8, "why": "test"}, "train.select": {"value": "best", "why": "test"}}}
    train = TrainParams.load(REPO / "params.yaml").with_values(epochs="auto", warmup_epochs=4)
    with pytest.raises(MedsegError, match=r"warmup_epochs=4 is not below train\.epochs=4"):
        resolve(train, plan, "plans.json")


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently; `dvc repro` refuses the file: so do the stages."""
    text = (REPO / "params.yaml").read_text().replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.3\n", 1)
    line = text.splitlines().index("  lr: 0.3") + 1
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(MedsegError, match=rf"params\.yaml: line {line}: key 'lr' given twice in one section "
                                          rf"\(also line {line - 1}\); keep one"):
        load_section("evaluate", path)  # any section: the whole file is refused


def test_an_empty_share_gets_the_hint_that_fits_it(tmp_path):
    """Pooling train and val into folds mends an empty val share, never an empty test share (issue 27, 8)."""
    path = write_params(tmp_path, lambda p: p["split"].update(fractions={"train": 0.8, "val": 0.2, "test": 0.0}))
    with pytest.raises(MedsegError) as err:
        load_section("split", path)
    assert "split.fractions.test=0.0 leaves the test split empty" in str(err.value) and "split.folds" not in str(err.value)
    path = write_params(tmp_path, lambda p: p["split"].update(fractions={"train": 0.8, "val": 0.0, "test": 0.2}))
    with pytest.raises(MedsegError, match=r"val split empty .*\(or pool train and val into split\.folds >= 2 folds\)"):
        load_section("split", path)


def test_a_changed_value_is_checked_like_a_loaded_one():
    """with_values (how a plan's value or a test's change enters a section) runs the key's rule and the
    rules across keys, as loading does."""
    split = SplitParams.load(REPO / "params.yaml")
    with pytest.raises(MedsegError, match=r"split\.folds=0 is out of range"):
        split.with_values(folds=0)
    with pytest.raises(MedsegError, match="sum to 1"):
        split.with_values(fractions={"train": 0.5, "val": 0.1, "test": 0.1})
    assert split.with_values(folds=5).folds == 5 and split.folds == 1


@pytest.mark.parametrize("section", ["train", "evaluate"])
def test_a_device_is_auto_cpu_cuda_or_cuda_n(tmp_path, section):
    """evaluate has its own device key, so a queued experiment pinned to one GPU evaluates there too."""
    path = write_params(tmp_path, lambda p: p[section].update(device="gpu0"))
    with pytest.raises(MedsegError, match=rf"{section}\.device='gpu0' is not allowed; use auto, cpu, cuda or cuda:N"):
        load_section(section, path)
    assert load_section(section, write_params(tmp_path, lambda p: p[section].update(device="cuda:1"))).device == "cuda:1"


def test_values_dvc_writes_unquoted_read_back_as_dvc_meant_them(tmp_path):
    """`dvc exp run -S train.compile=off` rewrites params.yaml as YAML 1.2, unquoted: `off` is a string there,
    a boolean to PyYAML's YAML 1.1. medseg reads booleans as YAML 1.2 does: true and false only."""
    text = (REPO / "params.yaml").read_text().replace("compile: 'off'", "compile: off").replace("amp: auto", "amp: off", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("tta: false", "tta: False"))
    train = TrainParams.load(path)
    assert (train.compile, train.amp) == ("off", "off")
    assert yaml.safe_load(text)["train"]["compile"] is False  # what a plain YAML 1.1 read gave
    from medseg.params import EvaluateParams
    assert EvaluateParams.load(path).tta is False


@pytest.mark.parametrize("section", ["split", "balance", "train", "evaluate"])
def test_every_seed_is_bounded_to_what_numpy_and_torch_accept(tmp_path, section):
    """numpy's generators take seeds in [0, 2**32 - 1]: every section's seed is refused past that, naming it."""
    for bad in (2**32, -1):
        path = write_params(tmp_path, lambda p, s=bad: p[section].update(seed=s))
        with pytest.raises(MedsegError, match=rf"{section}\.seed"):
            load_section(section, path)
    assert load_section(section, write_params(tmp_path, lambda p: p[section].update(seed=2**32 - 1)))


def test_the_phantom_seed_is_bounded_too(tmp_path):
    path = write_params(tmp_path, lambda p: p["dataset"]["phantom"].update(seed=2**32))
    with pytest.raises(MedsegError, match="seed"):
        load_section("dataset", path)
