"""Bad input, third round (issue 27), family 2 through the real `evaluate`: a model trained on slices of
another size (e.g. `evaluate` run by hand after `convert.size` changed) or a checkpoint in another
model's folder is refused naming both sides, with test_bad_inputs.py's contract."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from medseg.model_card import save_checkpoint
from tests.stages.test_bad_inputs import refused_and_untouched
from tests.tiny_models import save_tiny


def put_model(work: Path, folder: str, name: str, preprocess: dict) -> None:
    path = save_tiny(work / "data/models" / folder / "best.pt", name)
    ckpt = torch.load(path, weights_only=True)
    save_checkpoint(path, ckpt | {"preprocess": preprocess})


def test_evaluate_refuses_models_of_other_slices_or_another_model(tmp_path, pipeline):
    work = pipeline(tmp_path)
    info = json.loads((work / "data/slices/info.json").read_text())
    put_model(work, "unet", "unet", info | {"size": 2 * info["size"]})
    refused_and_untouched(work, "stages.evaluate", "data/models/unet/best.pt: trained on other slices than "
                          f"data/slices/info.json (size {2 * info['size']} vs {info['size']}); run the train_unet "
                          "stage again")
    put_model(work, "unet", "attn_unet", info)
    refused_and_untouched(work, "stages.evaluate", "data/models/unet/best.pt: holds a attn_unet model, not unet")
