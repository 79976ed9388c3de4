"""Bad input, second round (issue 18), families 1 and 3 through the real stage scripts: numbers in
params.yaml (NaN, inf, an int where a float goes, values that would fail later) and stages run out
of order. The contract is test_bad_inputs.py's: exit 2, one `error:` line naming the key or file,
no traceback, the working folder as it was. tests/medseg/test_params_property.py checks every key
of every section at the params level; here one case of each kind reaches the user through a stage.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_workdir, stage
from tests.stages.test_bad_inputs import refused_and_untouched

NAN, INF = float("nan"), float("inf")

# ---------------------------------------------------------------- (1) every number checked the same way

BAD_NUMBERS = {
    # id: (stage script and args, params edits, needles of the error line)
    "nan_ct_window": ("stages.convert", (), {"convert.window_level": NAN},  # before: every image black, exit 0
                      ("params.yaml: convert.window_level=nan is not a finite number",)),
    "inf_window_width": ("stages.convert", (), {"convert.window_width": INF},
                         ("params.yaml: convert.window_width=inf is not a finite number",)),
    "int_eval_threshold_1": ("stages.evaluate", (), {"evaluate.threshold": 1},  # before: accepted, every Dice 0
                             ("params.yaml: evaluate.threshold=1 is not allowed", "a number in (0, 1)")),
    "zero_val_fraction": ("stages.split", (), {"split.fractions.val": 0.0, "split.fractions.train": 0.8},
                          ("params.yaml: split.fractions.val=0.0 leaves the val split empty",)),
    "nan_test_fraction": ("stages.split", (), {"split.fractions.test": NAN},
                          ("params.yaml: split.fractions.test=nan is not a finite number",)),
    "zero_pos_repeat": ("stages.balance", (), {"balance.pos_repeat": 0},
                        ("params.yaml: balance.pos_repeat=0 is out of range (0, 100]",)),
    "zero_lr": ("stages.train", ("unet",), {"train.lr": 0}, ("params.yaml: train.lr=0 is out of range (0, 10]",)),
    "deeplab_batch_1": ("stages.train", ("deeplab",), {"train.batch_size": 1},
                        ("params.yaml: train.batch_size=1 is too small for deeplab", "at least 2 images")),
    "unknown_encoder": ("stages.train", ("upernet",), {"models.upernet.encoder": "resnet19"},
                        ("params.yaml: models.upernet.encoder='resnet19' is not an encoder",)),
}


@pytest.mark.parametrize("case", list(BAD_NUMBERS))
def test_bad_number_is_refused_before_any_work(tmp_path, stage_phantoms, case):
    module, args, edits, needles = BAD_NUMBERS[case]
    work = make_workdir(tmp_path, edits)
    if module == "stages.convert":  # a readable raw dataset, so only the params can stop it
        shutil.copytree(stage_phantoms("phantom"), work / "data/raw/phantom")
    refused_and_untouched(work, module, *needles, args=args)


def test_fixed_size_encoder_and_another_slice_size(tmp_path):
    """Swin at 224 against slices converted at 32 px: refused before the network is built."""
    work = make_workdir(tmp_path, {"models.upernet.encoder": "tu-swin_base_patch4_window7_224"})
    (work / "data/slices").mkdir(parents=True)
    (work / "data/slices/info.json").write_text('{"dataset": "phantom", "channels": 1, "size": 32}')
    refused_and_untouched(work, "stages.train", "params.yaml: models.upernet.encoder='tu-swin_base_patch4_window7_224' "
                          "takes 224x224 inputs only", "32x32 slices", "set convert.size to 224", args=("upernet",))


def test_pos_repeat_that_rounds_to_no_positive_draw(tmp_path, pipeline):
    work = pipeline(tmp_path, {"balance.pos_repeat": 0.01})
    refused_and_untouched(work, "stages.balance", "params.yaml: balance.pos_repeat=0.01 draws none of the",
                          "positive train slices")


# ---------------------------------------------------------------- (3) stages run out of order

OUT_OF_ORDER = {
    # id: (paths removed from a finished pipeline, stage and args, needles)
    "convert_before_download": (("data/raw",), "stages.convert", (),
                                ("data/raw/phantom: missing; run the download stage first",)),
    "split_before_convert": (("data/slices",), "stages.split", (),
                             ("data/slices/manifest.csv: missing; run the convert stage first",)),
    "balance_without_split": (("data/split.csv",), "stages.balance", (),
                              ("data/split.csv: missing; run the split stage first",)),
    "balance_without_info": (("data/slices/info.json",), "stages.balance", (),
                             ("data/slices/info.json: missing; run the convert stage first",)),
    "train_without_sampling": (("data/train_sampling.csv",), "stages.train", ("unet",),
                               ("data/train_sampling.csv: missing; run the balance stage first",)),
    "evaluate_without_split": (("data/split.csv",), "stages.evaluate", (),
                               ("data/split.csv: missing; run the split stage first",)),
}


@pytest.mark.parametrize("case", list(OUT_OF_ORDER))
def test_stage_run_out_of_order_names_the_file_and_its_stage(tmp_path, pipeline, case):
    removed, module, args, needles = OUT_OF_ORDER[case]
    work = pipeline(tmp_path)
    for rel in removed:
        path = work / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    refused_and_untouched(work, module, *needles, args=args)


def test_convert_after_a_download_of_another_dataset(tmp_path, pipeline):
    work = pipeline(tmp_path, {"dataset.name": "phantom_lgg"})
    refused_and_untouched(work, "stages.convert", "data/raw/phantom_lgg: missing; run the download stage first",
                          "data/raw holds phantom")


def test_split_of_other_slices_is_refused(tmp_path, pipeline):
    work = pipeline(tmp_path)
    split = pd.read_csv(work / "data/split.csv", dtype=str)
    split.loc[0, "slice_id"] = "another_0000"
    split.to_csv(work / "data/split.csv", index=False)
    refused_and_untouched(work, "stages.balance", "data/split.csv: does not match data/slices/manifest.csv",
                          "run the split stage again")


@pytest.mark.parametrize("content, needle", [("", "cannot read CSV"), ("slice_id,positive\nx,1\n", "no column 'repeats'")],
                         ids=["empty", "no_repeats_column"])
def test_broken_sampling_table_is_refused(tmp_path, pipeline, content, needle):
    work = pipeline(tmp_path)
    Path(work / "data/train_sampling.csv").write_text(content)
    refused_and_untouched(work, "stages.train", f"data/train_sampling.csv: {needle}", "run the balance stage again",
                          args=("unet",))


def test_sampling_of_another_fold_layout_is_refused_before_any_fold(tmp_path, pipeline):
    """split.folds 1 -> 2 with split re-run and balance not: the old table would leave the old val slices
    out of every fold's training, silently (issue 27, family 6)."""
    work = pipeline(tmp_path, {"split.folds": 2})
    result = stage(work, "stages.split")
    assert result.returncode == 0, result.stderr[-2000:]
    refused_and_untouched(work, "stages.train", "data/train_sampling.csv: does not cover the train split of "
                          "data/split.csv", "made for another split or fold layout: run the balance stage again",
                          args=("unet",))
