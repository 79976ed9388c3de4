"""Stage `convert`: raw dataset -> 2D PNG slices in data/slices/ with manifest.csv, info.json and
plans.json (what every `auto` param resolves to for this dataset and `convert.profile`, and why).

With `convert.on_error: skip` an unreadable case is left out and listed in
results/convert/skipped.csv rather than stopping the stage; with `fail` (default) the first one
stops it and data/slices stays as it was.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from types import ModuleType

from medseg import paths
from medseg.cli import run_stage
from medseg.datasets import CaseRef
from medseg.datasets.registry import (DatasetParams, convert_choices, dataset_plan, format_for, phantom_writer,
                                     reader_config)
from medseg.errors import MedsegError
from medseg.outputs import staged_dir, write_atomic, write_json
from medseg.params import ConvertParams
from medseg.plans import build_plan, fingerprint, resolve_profile, write_plan
from medseg.conversion import check_label_values, convert_all, manifest_columns

log = logging.getLogger("medseg.convert")
SLICES, RESULTS = paths.SLICES, paths.stage_results("convert")


def warn_on_count_mismatch(fmt: ModuleType, cases: list[CaseRef], raw: Path) -> None:
    """Real datasets only: say so when the files found differ from the published counts."""
    found = fmt.count_summary(cases)
    for key, expected in fmt.EXPECTED.items():
        if found.get(key) != expected:
            log.warning("%s: found %s %s, the full dataset has %d (partial or different download?)",
                        raw, found.get(key), key, expected)


def main() -> None:
    argparse.ArgumentParser(prog="python -m stages.convert", description=__doc__).parse_args()
    dataset, convert = DatasetParams.load(), ConvertParams.load()
    profile, profile_why = resolve_profile(convert.profile)
    chosen = convert_choices(dataset.name, convert, profile)
    for key, entry in chosen.items():
        log.info("%s %s -> %s (%s)", key, getattr(convert, key.split(".")[1]), entry["value"], entry["why"])
    log.info("profile %s (%s)", profile, profile_why)
    cfg = reader_config(dataset, convert, chosen)  # + dataset.labels, checked here
    raw = paths.raw_dir(dataset.name)
    fmt = format_for(dataset.name)
    if not raw.is_dir():  # run out of order, or after a download of another dataset
        held = sorted(p.name for p in paths.RAW.iterdir() if p.is_dir()) if paths.RAW.is_dir() else []
        raise MedsegError(f"{raw}: missing; run the download stage first (dataset.name={dataset.name}"
                          f"{'; data/raw holds ' + ', '.join(held) if held else ''})")
    started = time.perf_counter()
    cases = fmt.list_cases(raw)
    if phantom_writer(dataset.name) is None:
        warn_on_count_mismatch(fmt, cases, raw)
    with staged_dir(SLICES) as tmp:
        manifest, skipped = convert_all(fmt.__name__, cases, cfg, convert, raw, tmp)
        classes = cfg.classes
        check_label_values(cfg.labels, manifest, classes)
        manifest[manifest_columns(classes)].to_csv(tmp / "manifest.csv", index=False)
        channels = int(manifest["channels"].iloc[0])
        # normalize only where the reader has the choice: the other stores stay byte-identical
        write_json(tmp / "info.json", {"dataset": dataset.name, "channels": channels,
                                       "size": cfg.size, "window_level": cfg.window_level,
                                       "window_width": cfg.window_width,
                                       **({"normalize": cfg.normalize} if "convert.normalize" in chosen else {}),
                                       **({"classes": classes.as_json()} if classes.multi else {})})
        write_plan(tmp, build_plan(dataset_plan(dataset.name), dataset.name, profile, profile_why, chosen,
                                   fingerprint(manifest, channels, cfg.size)))
    seconds = time.perf_counter() - started
    positive = int((manifest["fg_pixels"] > 0).sum())
    write_atomic(RESULTS / "skipped.csv", skipped.to_csv(index=False))
    write_json(RESULTS / "metrics.json", {
        "cases": len(cases) - len(skipped), "skipped_cases": len(skipped),
        "groups": int(manifest["group"].nunique()), "slices": len(manifest),
        "positive_slices": positive})  # counts only: a timing here would change dvc.lock on every run
    for case_id, error in zip(skipped["case_id"], skipped["error"]):
        log.warning("skipped case %s: %s", case_id, error)
    log.info("%d cases -> %d slices (%d with foreground) in %s, %.1f s%s",
             len(cases) - len(skipped), len(manifest), positive, SLICES, seconds,
             f"; {len(skipped)} unreadable cases skipped, see {RESULTS / 'skipped.csv'}" if len(skipped) else "")


if __name__ == "__main__":
    run_stage(main)
