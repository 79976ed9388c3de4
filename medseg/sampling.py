"""Training-set balance: undersample foreground-free slices, oversample positive ones."""
from __future__ import annotations

import numpy as np
import pandas as pd


def sampling_table(train: pd.DataFrame, neg_keep: float, pos_repeat: float, seed: int) -> pd.DataFrame:
    """slice_id -> integer repeats per epoch: negatives 1 (a `neg_keep` share) or 0, positives
    floor/ceil of `pos_repeat` so their total is round(pos_repeat * n_pos)."""
    rng = np.random.default_rng(seed)
    positive = (train["fg_pixels"] > 0).to_numpy()
    repeats = np.zeros(len(train), dtype=int)
    neg_idx = np.flatnonzero(~positive)
    keep = rng.permutation(neg_idx)[: int(round(neg_keep * len(neg_idx)))]
    repeats[keep] = 1
    pos_idx = np.flatnonzero(positive)
    base = int(np.floor(pos_repeat))
    repeats[pos_idx] = base
    extra = int(round(pos_repeat * len(pos_idx))) - base * len(pos_idx)
    repeats[rng.permutation(pos_idx)[:extra]] += 1
    return pd.DataFrame({"slice_id": train["slice_id"].to_numpy(), "positive": positive.astype(int),
                         "repeats": repeats})


def class_statistics(train: pd.DataFrame, table: pd.DataFrame, pixels_per_slice: int) -> dict[str, float]:
    """Slice counts and foreground pixel share before and after balancing."""
    fg = train["fg_pixels"].to_numpy(dtype=float)
    rep = table["repeats"].to_numpy()
    pos = table["positive"].to_numpy().astype(bool)
    return {
        "slices_before": int(len(train)),
        "positive_before": int(pos.sum()),
        "negative_before": int((~pos).sum()),
        "slices_after": int(rep.sum()),
        "positive_after": int(rep[pos].sum()),
        "negative_after": int(rep[~pos].sum()),
        "fg_share_before": float(fg.sum() / (len(fg) * pixels_per_slice)),
        "fg_share_after": float((fg * rep).sum() / max(rep.sum() * pixels_per_slice, 1)),
    }
