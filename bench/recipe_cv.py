"""Patient-level K-fold cross-validation of one training recipe on a real dataset: the bench that
measures each lever of a recipe (issue 23's ablation), not a pipeline stage.

It runs the pipeline's own pieces in one process, on every patient (no test split: each patient is
scored once, by the fold model that did not train on it): medseg.conversion (the reader of
`--dataset`), medseg.splitting.assign_folds (the `split` stage's folds), medseg.sampling (the
`balance` stage), medseg.training.train (the train stages' loop), and medseg.evaluation's
per-case table. Each run writes its out-of-fold probabilities and, for every post-processing
variant, the per-patient table, on the slice store's grid and (`@native`, where `prepare` kept the
source's masks in native.npz) on the source's own masks, as the field scores; `table` pairs every run with a baseline through
medseg.uncertainty.paired_comparison (Wilcoxon, Holm) -- medseg's comparison machinery applied
to its own recipe.

    python -m bench.recipe_cv prepare --dataset lgg --source /tmp/lgg_dev --size 96 --out /tmp/cv/slices96n  # --normalize auto
    python -m bench.recipe_cv run --slices /tmp/cv/slices96n --model deeplab --name base --out /tmp/cv/runs
    python -m bench.recipe_cv run ... --name ep24 --set train.epochs=24
    python -m bench.recipe_cv table --runs /tmp/cv/runs --baseline base --out results/realdata
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from medseg import paths
from medseg.model_card import Header, load_checkpoint
from medseg.model_loader import network_from_checkpoint
from medseg.cli import run_stage
from medseg.conversion import MANIFEST_COLUMNS, convert_all
from medseg.datasets.registry import DatasetParams, convert_choices, dataset_plan, format_for, reader_config
from medseg.errors import MedsegError
from medseg.evaluation import (choose_postprocessing, per_case_table, per_image_table, tune_min_area,
                               tune_min_volume)
from medseg.reporting import comparison_table
from medseg.hardware import amp_name, device_name, pick_amp_dtype, pick_device
from medseg.inference import predict_probs
from medseg.losses import LossParams
from medseg.networks import build_network, model_section
from medseg.outputs import write_json
from medseg.params import AugmentParams, BalanceParams, ConvertParams, EvaluateParams, Section, TrainParams
from medseg.plans import build_plan, fingerprint, resolve, resolve_profile
from medseg.prediction import resize_probs
from medseg.postprocess import clean_predictions, clean_stack, clean_volumes
from medseg.sampling import sampling_table
from medseg.slices import load_arrays, read_manifest
from medseg.splitting import assign_folds
from medseg.metrics import best_threshold
from medseg.training import Recipe, RunDirs, TrainData, train
from medseg.uncertainty import holm, mean_ci, paired_comparison

log = logging.getLogger("medseg.recipe_cv")
SECTIONS: dict[str, type[Section]] = {"balance": BalanceParams, "augment": AugmentParams, "train": TrainParams,
                                      "loss": LossParams}


def prepare(dataset: str, source: Path, size: int, normalize: str, out: Path) -> None:
    """Convert `source` (the dataset as it unpacks) into a slice store at `size` px with `normalize`
    (auto: the dataset's plan), as `convert` does."""
    fmt = format_for(dataset)
    convert = ConvertParams.load().with_values(size=size, normalize=normalize)
    chosen = convert_choices(dataset, convert, "cpu")  # the profile plans no convert value but the size given here
    dataset_cfg = DatasetParams.load().with_values(name=dataset, labels=None, classes=None)
    cfg = reader_config(dataset_cfg, convert, chosen)
    normalize = cfg.normalize
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest, _ = convert_all(fmt.__name__, fmt.list_cases(source), cfg, convert, source, tmp)
    manifest[MANIFEST_COLUMNS].to_csv(tmp / "manifest.csv", index=False)
    save_native_masks(fmt, source, cfg, tmp)
    write_json(tmp / "info.json", {"dataset": dataset, "channels": int(manifest["channels"].iloc[0]), "size": size,
                                   "normalize": normalize, "masks": "majority"})
    tmp.rename(out)
    log.info("%d groups, %d slices (%d with foreground) in %s", manifest["group"].nunique(), len(manifest),
             int((manifest["fg_pixels"] > 0).sum()), out)


def save_native_masks(fmt: Any, source: Path, cfg: Any, out: Path) -> None:
    """The masks at the source's own size (`native.npz`, by slice id), to score on the grid the field
    scores on (Buda et al.: the 256-px masks) as well as on the slice store's; only when every slice
    has one shape."""
    ids, masks = [], []
    for case in fmt.list_cases(source):
        for sl in fmt.read_case(case, cfg):
            ids.append(f"{case.case_id}_{sl.index:04d}")
            masks.append(sl.mask > 0)
    if len({m.shape for m in masks}) != 1:
        log.info("slices of several sizes: no native.npz, runs score on the store's grid only")
        return
    np.savez_compressed(out / "native.npz", slice_id=np.array(ids), masks=np.stack(masks))


INNER_VAL = 0.125  # the pipeline's val share of train + val (0.1 of 0.8)


def recipe(model: str, overrides: list[str], plan: dict[str, Any]) -> dict[str, Section]:
    """params.yaml's sections a train stage reads, with `section.key=value` overrides, validated, and
    every remaining `auto` resolved by `plan` as the stages resolve it."""
    params = yaml.safe_load(paths.PARAMS.read_text())
    cfg = {s: dict(params[s]) for s in SECTIONS} | {"model": dict(params["models"][model])}
    for item in overrides:
        key, _, text = item.partition("=")
        section, _, leaf = key.partition(".")
        section = "model" if section == "models" else section
        if section not in cfg or not leaf or (section != "model" and leaf not in cfg[section]):
            raise MedsegError(f"--set {item}: unknown key {key}")
        cfg[section][leaf.split(".")[-1]] = yaml.safe_load(text)
    typed: dict[str, Section] = {s: resolve(SECTIONS[s].parse(cfg[s], s), plan, "the plan of the slice store")
                                 for s in SECTIONS}
    return typed | {"model": model_section(model).parse(cfg["model"], f"models.{model}")}


def with_context(images: np.ndarray, rows: pd.DataFrame, context: int) -> np.ndarray:
    """2.5D input: each slice's channels followed by those of its `context` neighbours on each side
    in the same volume (edge slices repeat the nearest one)."""
    if context == 0:
        return images
    ordered = rows.assign(_n=range(len(rows))).sort_values(["group", "index"])
    stacks = []
    for offset in [o for o in range(-context, context + 1) if o != 0]:
        picked = np.empty(len(rows), dtype=np.int64)
        for _, part in ordered.groupby("group", sort=False):
            n = part["_n"].to_numpy()
            picked[n] = n[np.clip(np.arange(len(n)) + offset, 0, len(n) - 1)]
        stacks.append(images[picked])
    return np.concatenate([images, *stacks], axis=-1)


def inner_val(groups: pd.Series, share: float, seed: int) -> np.ndarray:
    """Which rows of a fold's training pool validate instead of training: `share` of its patients
    (at least one), drawn by `seed`. The fold model's checkpoint and early stop are chosen on them, as
    the pipeline chooses on its val split, never on the held-out patients it is scored on."""
    if share <= 0:
        return np.zeros(len(groups), bool)
    names = np.array(sorted(groups.unique()))
    picked = np.random.default_rng(seed).choice(names, max(1, round(share * len(names))), replace=False)
    return groups.isin(picked).to_numpy()


def checkpoint_choice(select: str, val_share: float) -> str:
    """What chose each fold model's weights, for run.json and the tables."""
    if select == "final":
        return "the final epoch (no selection; val only monitored)"
    return f"{val_share:g} of each fold's training patients" if val_share > 0 else "the held-out fold (optimistic)"


def run(slices: Path, model: str, name: str, out: Path, overrides: list[str], folds: int, seed: int,
        context: int, size: int | None, only: list[int] | None = None, val_share: float = INNER_VAL) -> None:
    """Train `folds` fold models of `model` under the recipe (or only the folds in `only`, scoring only
    their patients) and write the run's out-of-fold results. Each fold model trains on the other folds'
    patients less `val_share` of them, which choose its checkpoint (0: the held-out fold chooses, an
    optimistic score kept only to compare with runs made before). A fold whose finished checkpoint of
    the same recipe and data is already in the run's folder is kept, not retrained (a killed run resumes)."""
    info = json.loads((slices / "info.json").read_text())
    manifest = read_manifest(slices)
    profile, profile_why = resolve_profile(ConvertParams.load().profile)
    plan = build_plan(dataset_plan(info["dataset"]), info["dataset"], profile, profile_why,
                      {"convert.size": {"value": info["size"], "why": "the slice store's size"}},
                      fingerprint(manifest, info["channels"], info["size"]))
    cfg = recipe(model, overrides, plan)
    split = assign_folds(manifest, pd.DataFrame({"slice_id": manifest["slice_id"], "split": "train",
                                                 "group": manifest["group"]}), folds, seed)
    rows = manifest.merge(split[["slice_id", "fold"]], on="slice_id")
    images, masks = load_arrays(slices, rows["slice_id"].tolist(), info["channels"])
    if size is not None and size != images.shape[1]:
        import cv2
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
        masks = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in masks])
    images = with_context(images, rows, context)
    channels = images.shape[-1]
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("oof.npz", "rows.csv", "run.json"):
        (work / stale).unlink(missing_ok=True)
    device = pick_device(cfg["train"].device)
    amp = pick_amp_dtype(cfg["train"].amp, device)
    probs = {tta: np.zeros(masks.shape, np.float32) for tta in (False, True)}
    fold_stats = []
    chosen = list(range(folds)) if only is None else sorted(set(only))
    for k in chosen:
        held = (rows["fold"] == k).to_numpy()
        val = np.zeros(len(rows), bool)
        val[~held] = inner_val(rows.loc[~held, "group"], val_share, seed + k)
        chooser = val if val.any() else held
        train_rows = rows[~held & ~val]
        bal = cfg["balance"]
        repeats = sampling_table(train_rows, bal.neg_keep, bal.pos_repeat, bal.seed)["repeats"].to_numpy()
        keep = repeats > 0
        ti = np.flatnonzero(~held & ~val)[keep]
        data = TrainData(images[ti], masks[ti], repeats[keep].astype(np.int64), images[chooser], masks[chooser])
        torch.manual_seed(cfg["train"].seed)
        network = build_network(model, channels, cfg["model"].as_dict())
        header = Header(model, cfg["model"].as_dict(), channels, info, fold=k, folds=folds)
        state = train(network, header, data, Recipe(cfg["train"], cfg["loss"], cfg["augment"]),
                      RunDirs(work / "models" / f"fold_{k}", work / "live" / f"fold_{k}"), keep_finished=True)
        best = work / "models" / f"fold_{k}" / "best.pt"
        fitted = network_from_checkpoint(load_checkpoint(best), best).to(device)
        for tta in (False, True):
            probs[tta][held] = predict_probs(fitted, images[held], device, cfg["train"].batch_size, amp, tta)
        fold_stats.append({"fold": k, "epochs": state.epoch, "best_epoch": state.best_epoch,
                           "val_patients": int(rows.loc[chooser, "group"].nunique()),
                           "train_seconds": state.train_seconds, "draws_per_epoch": int(repeats.sum())})
        log.info("%s fold %d: %d epochs, %.0f s", name, k, state.epoch, state.train_seconds)
    scored = rows["fold"].isin(chosen).to_numpy()
    rows = rows[scored].reset_index(drop=True)
    np.savez_compressed(work / "oof.npz", slice_id=rows["slice_id"].to_numpy().astype(str),
                        probs=np.round(probs[False][scored] * 255).astype(np.uint8),
                        probs_tta=np.round(probs[True][scored] * 255).astype(np.uint8))
    rows[["slice_id", "group", "index", "fold", "fg_pixels", "spacing"]].to_csv(work / "rows.csv", index=False)
    shutil.rmtree(work / "models")  # checkpoints are large; the out-of-fold probabilities are what is scored
    meta = {"name": name, "model": model, "slices": str(slices), "overrides": overrides, "context": context,
            "normalize": info.get("normalize", "none"), "masks": info.get("masks", "nearest"), "channels": channels,
            "size": int(images.shape[1]), "folds": folds, "scored_folds": chosen, "seed": seed,
            "checkpoint_chosen_on": checkpoint_choice(cfg["train"].select, val_share), "recipe": {s: c.as_dict() for s, c in cfg.items()},
            "device": device_name(device), "amp": amp_name(amp), "torch": torch.__version__,
            "train_minutes": sum(f["train_seconds"] for f in fold_stats) / 60, "per_fold": fold_stats}
    write_json(work / "run.json", meta)
    score(work)


POSTPROCESS = ("none", "min_area_2d", "largest_3d", "min_volume_3d", "auto")
NATIVE_POSTPROCESS = ("none", "largest_3d", "auto")  # on the source's grid: what the tables compare


def _post(variant: str, binary: np.ndarray, rows: pd.DataFrame, fold: np.ndarray, probs: np.ndarray,
          gt: np.ndarray, threshold: float) -> tuple[np.ndarray, str]:
    """The binary masks after one post-processing variant and what it chose (out of fold, or on the
    same out-of-fold predictions as the pipeline's `min_area: auto` does)."""
    if variant == "none":
        return binary, ""
    if variant == "min_area_2d":  # the pipeline's evaluate.min_area: auto, chosen on these predictions
        area = tune_min_area(rows, probs, gt, threshold, "one", False)
        return clean_stack(binary, area, False), f"min_area {area}"
    if variant == "largest_3d":
        return clean_volumes(binary, rows, 0, True), ""
    if variant == "auto":  # evaluate's defaults: each step chosen on these (pooled out-of-fold) predictions
        auto = EvaluateParams.load().with_values(min_area="auto", largest_component=False, min_volume="auto",
                                                 largest_volume="auto", empty="one")
        post = choose_postprocessing(auto, rows, probs, gt, threshold)
        return clean_predictions(binary, rows, **post), ", ".join(f"{k} {v}" for k, v in post.items())
    out, chosen = binary.copy(), []
    for k in np.unique(fold):  # the volume cut-off of fold k chosen on the other folds' patients only
        other, this = fold != k, fold == k
        volume = tune_min_volume(rows[other].reset_index(drop=True), binary[other], gt[other], "one")
        out[this] = clean_volumes(binary[this], rows[this].reset_index(drop=True), volume, False)
        chosen.append(volume)
    return out, "min_volume per fold " + "/".join(map(str, chosen))


def score(work: Path) -> None:
    """Per-patient tables of every post-processing variant, with and without flip TTA."""
    meta = json.loads((work / "run.json").read_text())
    rows = pd.read_csv(work / "rows.csv", dtype={"slice_id": str, "group": str}, keep_default_na=False)
    oof = np.load(work / "oof.npz")
    gt = _masks(meta, rows)
    fold = rows["fold"].to_numpy()
    native = _native_masks(meta, rows)
    variants = {}
    for tta in (False, True):
        probs = (oof["probs_tta"] if tta else oof["probs"]).astype(np.float32) / 255
        threshold = best_threshold(probs, gt, 0)  # as ensemble.json: best pixel F1 over the out-of-fold predictions
        grids = [("", probs, gt, POSTPROCESS)]
        if native is not None:  # the probabilities resized to the source's grid, scored on its own masks
            grids.append(("@native", resize_probs(probs, native.shape[1:]), native, NATIVE_POSTPROCESS))
        for grid, grid_probs, grid_gt, post in grids:
            variants |= _score_grid(work, rows, fold, grid_probs, grid_gt, threshold, post, ("+tta" if tta else "") + grid)
    meta["variants"] = variants
    write_json(work / "run.json", meta)
    best = max(variants, key=lambda v: variants[v]["dice"])
    log.info("%s: %s", meta["name"], ", ".join(f"{v} {s['dice']:.4f}" for v, s in variants.items()))
    log.info("%s: best variant %s", meta["name"], best)


def _score_grid(work: Path, rows: pd.DataFrame, fold: np.ndarray, probs: np.ndarray, gt: np.ndarray,
                threshold: float, post: tuple[str, ...], suffix: str) -> dict[str, dict[str, Any]]:
    """Each post-processing variant of `post` on one grid: its per-patient table (written) and scores."""
    variants = {}
    binary = probs >= threshold
    for variant in post:
        pred, chose = _post(variant, binary, rows, fold, probs, gt, threshold)
        label = variant + suffix
        cases = per_case_table(rows, pred, gt, "one")
        cases.insert(1, "fold", cases["group"].map(dict(zip(rows["group"], rows["fold"]))))
        images = per_image_table(rows, pred, gt, "one")
        cases.to_csv(work / f"per_case_{label}.csv", index=False, float_format="%.6f")
        low, high = mean_ci(cases["dice"], 10_000, 0)
        empty = images[images["gt_pixels"] == 0]
        variants[label] = {"dice": float(cases["dice"].mean()), "dice_ci_low": low, "dice_ci_high": high,
                           "dice_fg": float(cases.loc[cases["gt_voxels"] > 0, "dice"].mean()),
                           "fp_image_rate": float((empty["pred_pixels"] > 0).mean()) if len(empty) else None,
                           "zero_cases": int((cases["dice"] == 0).sum()), "threshold": threshold,
                           "chosen": chose}
    return variants


def _native_masks(meta: dict[str, Any], rows: pd.DataFrame) -> np.ndarray | None:
    """The run's ground-truth masks at the source's size (the slice store's native.npz), or None."""
    path = Path(meta["slices"]) / "native.npz"
    if not path.exists():
        return None
    saved = np.load(path)
    where = {sid: n for n, sid in enumerate(saved["slice_id"].astype(str))}
    return saved["masks"][[where[sid] for sid in rows["slice_id"]]]


def _masks(meta: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """The run's ground-truth masks, at the side it trained at."""
    slices = Path(meta["slices"])
    _, masks = load_arrays(slices, rows["slice_id"].tolist(), 1)
    if masks.shape[1] != meta["size"]:
        import cv2
        masks = np.stack([cv2.resize(m, (meta["size"],) * 2, interpolation=cv2.INTER_NEAREST) for m in masks])
    return masks.astype(bool)


def full_set_minutes(meta: dict[str, Any], slices: int, positive: int, train_share: float) -> float:
    """Training minutes of one model on a whole dataset of `slices` (`positive` of them with foreground)
    with `train_share` of it in training, at the seconds per training draw this run measured and
    under its recipe's sampling and epochs: what the run costs, scaled by slices. The seconds per draw
    are the median over the folds, so one fold that shared the cores with other work does not set it."""
    per_draw = float(np.median([f["train_seconds"] / (f["epochs"] * f["draws_per_epoch"]) for f in meta["per_fold"]]))
    bal, epochs = meta["recipe"]["balance"], meta["recipe"]["train"]["epochs"]
    per_epoch = train_share * (positive * bal["pos_repeat"] + (slices - positive) * bal["neg_keep"])
    return per_draw * per_epoch * epochs / 60


def lever(meta: dict[str, Any]) -> str:
    """What a run changed against the current recipe: its --set overrides, 2.5D context, and the
    slice store's intensity rescaling."""
    levers = meta["overrides"] + ([f"2.5D ±{meta['context']}"] if meta["context"] else [])
    if meta.get("normalize", "none") != "none":
        levers.append(f"convert.normalize={meta['normalize']}")
    if meta.get("masks", "nearest") == "nearest":  # stores prepared before convert took each pixel's majority label
        levers.append("masks resized by nearest neighbour")
    chosen = meta.get("checkpoint_chosen_on", checkpoint_choice("best", 0))  # runs before 2026-12-04 chose so
    if not chosen.startswith("the final epoch"):
        levers.append(f"checkpoint chosen on {chosen}")
    return ", ".join(levers) or "current recipe"


def table(runs: Path, baseline: str, out: Path, full: tuple[int, int, float], base_variant: str = "min_area_2d",
          only: list[str] | None = None) -> None:
    """One row per (run, variant): OOF per-patient Dice [CI], paired difference to the baseline run's
    `base_variant` (Holm over all rows), CPU minutes here and scaled to the full set `full` (slices,
    positive slices, train share); written as ablation.md and ablation.json in `out`. `only`: these
    post-processing variants (each run's that it has)."""
    metas = {m["name"]: m for m in (json.loads(p.read_text()) for p in sorted(runs.glob("*/run.json")))
             if "variants" in m}
    if baseline not in metas:
        raise MedsegError(f"{runs}: no finished run named {baseline!r}")
    metas = {n: m for n, m in metas.items() if m["model"] == metas[baseline]["model"]}  # one model's levers
    tables = {f"{name}/{v}": pd.read_csv(runs / name / f"per_case_{v}.csv", dtype={"group": str})
              for name, m in metas.items() for v in m["variants"] if only is None or v in only}
    reference = f"{baseline}/{base_variant}"
    pairs = paired_comparison({reference: tables[reference]} | {k: t for k, t in tables.items() if k != reference},
                              "dice", 10_000, 0)
    against = [p for p in pairs if p["a"] == reference]
    adjusted = holm([p["p_wilcoxon"] if p["p_wilcoxon"] is not None else math.nan for p in against])
    lines = ["| run | model | lever (vs the baseline) | post-processing | patients | OOF per-patient Dice [95% CI] | "
             "dice_fg | patients at 0 | difference to baseline [95% CI] (paired patients) | Holm p | training min (5 folds) | "
             "est. training min, full set |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    records = []
    for key, t in tables.items():
        name, variant = key.split("/")
        m, v = metas[name], metas[name]["variants"][variant]
        pair = next((p for p in against if p["b"] == key), None)
        p_holm = adjusted[against.index(pair)] if pair is not None else None
        # paired_comparison reports reference - run; the table shows run - reference
        diff = "—" if pair is None else (f"{-pair['mean_diff']:+.3f} [{-pair['ci_high']:+.3f}, {-pair['ci_low']:+.3f}] "
                                         f"({pair['cases']})")
        changed = lever(m)
        lines.append(f"| {name} | {m['model']} | {changed} | {variant} {v['chosen']} | {len(t)} | "
                     f"{v['dice']:.3f} [{v['dice_ci_low']:.3f}, {v['dice_ci_high']:.3f}] | {v['dice_fg']:.3f} | "
                     f"{v['zero_cases']} | {diff} | {'—' if p_holm is None or math.isnan(p_holm) else f'{p_holm:.3g}'} | "
                     f"{m['train_minutes']:.1f} | {full_set_minutes(m, *full):.1f} |")
        records.append({"run": name, "variant": variant, "model": m["model"], "lever": changed, **v,
                        "diff_to_baseline": None if pair is None else -pair["mean_diff"],
                        "p_holm": None if p_holm is None or math.isnan(p_holm) else p_holm,
                        "train_minutes": m["train_minutes"], "full_set_minutes": full_set_minutes(m, *full),
                        "device": m["device"], "amp": m["amp"]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    write_json(out / "ablation.json", {"baseline": reference, "full_set": dict(zip(("slices", "positive",
                                                                                   "train_share"), full)),
                                        "rows": records})
    print("\n".join(lines))


def models_table(runs: Path, names: list[str], variant: str, out: Path, full: tuple[int, int, float]) -> None:
    """The models of `names` (one run each, same folds) under one post-processing `variant`: OOF
    per-patient Dice [CI], dice_fg, fp rate, cost, and their paired comparison (Wilcoxon, Holm over
    the pairs); written as models.md and models.json in `out`."""
    metas = {n: json.loads((runs / n / "run.json").read_text()) for n in names}
    models = [m["model"] for m in metas.values()]
    label = {n: m["model"] if len(set(models)) == len(models) else n for n, m in metas.items()}  # runs of one model
    tables = {label[n]: pd.read_csv(runs / n / f"per_case_{variant}.csv", dtype={"group": str}) for n in names}
    lines = ["| model | patients | OOF per-patient Dice [95% CI] | dice_fg | fp_image_rate | patients at 0 | "
             "post-processing chosen | training min (5 folds) | est. training min, full set | trained on (autocast) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    records = {}
    for n, m in metas.items():
        v = m["variants"][variant]
        lines.append(f"| {label[n]} | {len(tables[label[n]])} | {v['dice']:.3f} [{v['dice_ci_low']:.3f}, "
                     f"{v['dice_ci_high']:.3f}] | {v['dice_fg']:.3f} | {v['fp_image_rate']:.3f} | {v['zero_cases']} | "
                     f"{v['chosen'] or '—'} | {m['train_minutes']:.1f} | {full_set_minutes(m, *full):.1f} | "
                     f"{m['device']} ({m['amp'] or 'fp32'}) |")
        records[label[n]] = {**v, "train_minutes": m["train_minutes"], "full_set_minutes": full_set_minutes(m, *full)}
    pairs = paired_comparison(tables, "dice", 10_000, 0)
    text = "\n".join(lines + ["", *comparison_table(pairs)]) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.md").write_text(text)
    write_json(out / "models.json", {"variant": variant, "models": records, "pairs": pairs,
                                     "total_full_set_minutes": sum(r["full_set_minutes"] for r in records.values())})
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="convert a dataset into a slice store")
    p.add_argument("--dataset", default="lgg")
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--normalize", choices=("auto", "none", "volume"), default="auto",
                   help="convert.normalize (auto: the dataset's plan)")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="K-fold CV of one recipe")
    r.add_argument("--slices", type=Path, required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--context", type=int, default=0, help="2.5D: neighbour slices on each side as extra channels")
    r.add_argument("--size", type=int, default=None, help="resize the slices to this side first")
    r.add_argument("--only-folds", type=int, nargs="+", default=None, help="train and score only these folds")
    r.add_argument("--val-share", type=float, default=INNER_VAL,
                   help="share of each fold's training patients that chooses its checkpoint (0: the held-out fold, "
                        "optimistic; runs before 2026-12-04 did this)")
    mt = sub.add_parser("models", help="the models table over finished runs of the same recipe")
    mt.add_argument("--runs", type=Path, required=True)
    mt.add_argument("--names", nargs="+", required=True)
    mt.add_argument("--variant", default="auto")
    mt.add_argument("--out", type=Path, required=True)
    mt.add_argument("--full", type=float, nargs=3, default=(3929, 1373, 0.7), metavar=("SLICES", "POSITIVE", "SHARE"))
    s = sub.add_parser("score", help="re-score a finished run")
    s.add_argument("--work", type=Path, required=True)
    t = sub.add_parser("table", help="the ablation table over finished runs")
    t.add_argument("--runs", type=Path, required=True)
    t.add_argument("--baseline", required=True)
    t.add_argument("--baseline-variant", default="min_area_2d",
                   help="the baseline run's post-processing the rows are paired against")
    t.add_argument("--variants", nargs="+", help="only these post-processing variants (default: all)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--full", type=float, nargs=3, default=(3929, 1373, 0.7), metavar=("SLICES", "POSITIVE", "SHARE"),
                   help="the whole dataset the cost is scaled to (default: all 110 LGG patients, 70 %% in training)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.command == "prepare":
        prepare(args.dataset, args.source, args.size, args.normalize, args.out)
    elif args.command == "run":
        run(args.slices, args.model, args.name, args.out, args.set, args.folds, args.seed, args.context, args.size,
            args.only_folds, args.val_share)
    elif args.command == "models":
        models_table(args.runs, args.names, args.variant, args.out, tuple(args.full))
    elif args.command == "score":
        score(args.work)
    else:
        table(args.runs, args.baseline, args.out, tuple(args.full), args.baseline_variant, args.variants)
    log.info("done in %.1f min", (time.perf_counter() - started) / 60)


if __name__ == "__main__":
    run_stage(main)
