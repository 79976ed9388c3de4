"""Resuming a training run: what last.pt must hold, whether it belongs to this run (the fingerprint, the
dtype), loading it into the run's objects, a finished run kept as it is, and the dvclive log rewound to
the checkpoint. Split from medseg.training so the loop reads as its phases."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medseg.model_card import is_finalised, load_checkpoint
from medseg.errors import MedsegError
from medseg.outputs import write_atomic

if TYPE_CHECKING:
    from medseg.training import Run

log = logging.getLogger("medseg.train")


@dataclass
class RunState:
    epoch: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    train_seconds: float = 0.0  # wall time of the training epochs (validation excluded), over resumes


RESUME_KEYS = ("state_dict", "optimizer", "scheduler", "scaler", "ema", "train_state")


def _readable(path: Path, run_state: bool) -> dict[str, Any] | None:
    """The checkpoint at `path` (with `run_state`, one holding a last.pt's run state), or None, reported, when it
    cannot be read (cut short, foreign): a run cannot resume from it, so it starts over instead of stopping."""
    try:
        ckpt = load_checkpoint(path)
    except MedsegError as err:
        log.warning("%s; cannot resume from it, starting over", err)
        return None
    if run_state and (any(k not in ckpt for k in RESUME_KEYS) or not isinstance(ckpt["train_state"], dict)):
        log.warning("%s: lacks the optimizer or run state of a last.pt; cannot resume from it, starting over", path)
        return None
    return ckpt


def resume_from(last: Path, best: Path, fingerprint: str, amp: str, run: Run) -> RunState | None:
    """Load an unfinished run of the same fingerprint from `last` into the run's training objects and
    return its state; None (nothing loaded, the reason logged) when there is no such run to continue."""
    if not last.exists():
        return None
    ckpt = _readable(last, run_state=True)
    if ckpt is None or ckpt["train_state"].get("finished", True) or not best.exists():
        return None
    if ckpt.get("fingerprint") != fingerprint:
        made_under = ckpt.get("amp", amp)
        why = (f"it was made under {made_under} and this run resolves train.amp to {amp}" if made_under != amp
               else "the params or the data changed since it was written")
        log.info("not resuming from %s: %s; starting over", last, why)
        return None
    if _readable(best, run_state=False) is None:
        return None
    targets = [(run.core, ckpt["state_dict"]), (run.optimizer, ckpt["optimizer"]), (run.scheduler, ckpt["scheduler"]),
               (run.scaler, ckpt["scaler"])] + ([(run.ema, ckpt["ema"])] if run.ema is not None else [])
    before = [copy.deepcopy(obj.state_dict()) for obj, _ in targets]
    try:
        for obj, state in targets:
            obj.load_state_dict(state)
        return RunState(**ckpt["train_state"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:  # a last.pt that does not fit: as unreadable
        for (obj, _), state in zip(targets, before):  # a fresh start from the untouched initial weights
            obj.load_state_dict(state)
        log.warning("cannot resume from %s: it does not fit this run (%s); starting over", last, type(err).__name__)
        return None


def finished_run(last: Path, best: Path, fingerprint: str) -> RunState | None:
    """The state of a finished run of this fingerprint whose best.pt is complete, else None."""
    if not (last.exists() and best.exists()):
        return None
    state = _readable(last, run_state=True)
    if state is None or state.get("fingerprint") != fingerprint or not state["train_state"].get("finished"):
        return None
    done = _readable(best, run_state=False)
    if done is None or not is_finalised(done):
        return None
    try:
        return RunState(**state["train_state"])
    except TypeError:  # a run state of another version
        return None


def rewind_live(live_dir: Path, epochs_done: int) -> None:
    """Drop dvclive rows logged after the checkpoint we resume from.

    dvclive resumes at the step in its summary, which a kill between logging and checkpointing
    leaves one epoch off (and step 0 it cannot tell from a fresh run), so the rows are trimmed here.
    """
    for tsv in sorted((live_dir / "plots" / "metrics").glob("*.tsv")):
        rows = pd.read_csv(tsv, sep="\t")
        kept = rows[rows["step"] < epochs_done]
        if len(kept) != len(rows):
            write_atomic(tsv, kept.to_csv(sep="\t", index=False).encode())
