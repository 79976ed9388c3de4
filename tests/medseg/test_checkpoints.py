"""medseg.checkpoints: the header fields a checkpoint is read back by are checked on load, and a
missing or edited one is one line naming the checkpoint file (issue 27, family 2)."""
from __future__ import annotations

import re

import pytest
import torch

from medseg.checkpoints import load_checkpoint
from medseg.errors import MedsegError
from tests.tiny_models import save_tiny


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["preprocess"].pop("size"), "preprocess.size=None is not a positive integer"),
    (lambda c: c["preprocess"].update(channels="3"), "preprocess.channels='3' is not a positive integer"),
    (lambda c: c["preprocess"].update(window_level="abc"), "preprocess.window_level='abc' is not a finite number"),
    (lambda c: c.update(preprocess=[48, 1]), "preprocess=[48, 1] is not a mapping"),
    (lambda c: c.update(in_channels=0), "in_channels=0 is not a positive integer"),
    (lambda c: c.update(in_channels=True), "in_channels=True is not a positive integer"),
    (lambda c: c.update(threshold=float("nan")), "threshold=nan is not a number in [0, 1]"),
    (lambda c: c.update(threshold=1.5), "threshold=1.5 is not a number in [0, 1]"),
    (lambda c: c.update(model_params="width=4"), "model_params is not what medseg writes"),
], ids=["no_size", "channels_text", "window_text", "preprocess_list", "zero_channels", "bool_channels",
        "nan_threshold", "threshold_above_1", "params_text"])
def test_an_edited_header_field_names_the_checkpoint(tmp_path, edit, needle):
    path = save_tiny(tmp_path / "best.pt")
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(MedsegError, match=re.escape(f"{path}: checkpoint ") + ".*" + re.escape(needle)):
        load_checkpoint(path)


def test_the_header_training_writes_loads(tmp_path):
    ckpt = load_checkpoint(save_tiny(tmp_path / "best.pt", threshold=0.0))  # 0 and 1 are thresholds too
    assert ckpt["preprocess"]["size"] == 48 and ckpt["threshold"] == 0.0
