"""DDP through the real launch path: torchrun starts 2 CPU processes (gloo) that run the training loop."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from medseg.model_card import load_checkpoint
from medseg.model_loader import network_from_checkpoint
from medseg.distributed import DistInfo, broadcast_from_main, current, mean_over_ranks
from tests.conftest import REPO

# Run by torchrun on every rank: train a width-4 U-Net for 2 epochs and report what this rank wrote.
WORKER = '''
import json
import sys
from pathlib import Path

import numpy as np
import torch
import medseg.model_card as model_card
import medseg.training as training
from medseg.datasets import ReaderConfig
from medseg.datasets.msd import list_cases, read_case
from medseg.losses import LossParams
from medseg.model_card import Header
from medseg.params import AugmentParams, TrainParams
from medseg.distributed import cleanup, init_distributed
from models import build_model

raw, run = Path(sys.argv[1]), Path(sys.argv[2])
info = init_distributed("cpu")
writes = []
real_save, real_live = model_card.save_checkpoint, training.Live


def save_checkpoint(path, payload):
    writes.append(str(path))
    real_save(path, payload)


def live(*args, **kwargs):
    writes.append(kwargs["dir"])
    return real_live(*args, **kwargs)


model_card.save_checkpoint, training.Live = save_checkpoint, live
slices = [s for c in list_cases(raw) for s in read_case(c, ReaderConfig(96, -600, 1500))]
images = np.stack([np.round(s.image * 255).astype(np.uint8) for s in slices])
masks = np.stack([s.mask.astype(np.uint8) for s in slices])
idx = np.flatnonzero(masks.reshape(len(masks), -1).any(1))[:16]
data = training.TrainData(images[idx], masks[idx], np.ones(len(idx), np.int64), images[idx], masks[idx])
cfg = TrainParams.load().with_values(epochs=2, batch_size=4, patience=0, lr=0.01, warmup_epochs=0, device="cpu",
                                     amp="off", workers=0)
torch.manual_seed(0)
model = build_model("unet", 1, width=4)
header = Header("unet", {"width": 4}, 1, {"size": data.train_images.shape[1], "channels": 1})
state = training.train(model, header, data, training.Recipe(cfg, LossParams.load(), AugmentParams.load()),
                       training.RunDirs(run / "models", run / "live"))
weights = float(sum(p.detach().double().sum() for p in model.parameters()))
(run.parent / f"rank{info.rank}.json").write_text(
    json.dumps({"world_size": info.world_size, "writes": writes, "state": vars(state), "weights": weights}))
cleanup()
'''


def test_single_process_helpers_are_identity():
    info = current()
    assert info == DistInfo() and info.is_main and info.world_size == 1
    assert mean_over_ranks(0.25, torch.device("cpu")) == 0.25
    assert broadcast_from_main((0.5, 0.75), torch.device("cpu")) == (0.5, 0.75)


def test_torchrun_two_cpu_ranks_train_and_only_rank0_writes(tmp_path, msd_phantom):
    shutil.copytree(msd_phantom, tmp_path / "raw")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "raw"), str(tmp_path / "run")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in reports)
    decisions = [{k: v for k, v in r["state"].items() if k != "train_seconds"} for r in reports]  # own clock each
    assert decisions[0] == decisions[1]  # same best epoch, same `finished`
    assert reports[0]["state"]["epoch"] == 2 and reports[0]["state"]["finished"]
    assert reports[0]["weights"] == pytest.approx(reports[1]["weights"], rel=1e-6)  # DDP kept them in step
    assert reports[0]["writes"] and reports[1]["writes"] == []  # rank 1 opened no Live, saved nothing

    models = tmp_path / "run/models"
    assert sorted(p.name for p in models.iterdir()) == ["best.pt", "last.pt"]
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(models / name)
        assert not any(k.startswith("module.") for k in ckpt["state_dict"])
        network_from_checkpoint(ckpt, models / name)  # loads strictly into a plain, non-DDP U-Net
    assert "threshold_source" in load_checkpoint(models / "best.pt")
    losses = np.loadtxt(tmp_path / "run/live/plots/metrics/train_loss.tsv", skiprows=1, usecols=1, ndmin=1)
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.json", "rank1.json", "raw", "run", "worker.py"]
