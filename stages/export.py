"""Export a trained model for deployment: DIR/model.onnx (one graph; dynamic batch, height and width)
and DIR/model.json (the preprocessing, the uint8 scaling, and the threshold(s) and post-processing
evaluate scored the model with, which predict applies).

--model is a checkpoint (best.pt) or a k-fold model folder (fold_<k>/best.pt + ensemble.json), which
becomes one graph averaging the folds' probabilities, thresholded at ensemble.json's threshold. The
export is checked before it is written: onnxruntime must match PyTorch within 1e-4 on random inputs.
Run it with `python -m stages.predict --model DIR ...` (onnxruntime; PyTorch is not imported).

Usage: python -m stages.export --model data/models/unet/best.pt --out DIR [--postprocess auto|off|FILE]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medseg.cli import run_stage
from medseg.onnx_export import check_parity, metadata, onnx_graph
from medseg.onnx_runtime import GRAPH, METADATA
from medseg.outputs import staged_files, write_atomic, write_json
from medseg.prediction import find_record
from medseg.scored_post import checkpoint_digests, describe
from medseg.model_loader import load_trained

log = logging.getLogger("medseg.export")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a best.pt checkpoint or a k-fold model folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; other files kept)")
    parser.add_argument("--postprocess", default="auto", metavar="auto|off|FILE",
                        help="the post-processing record to carry in model.json: auto = evaluate's "
                        "results/evaluate/<model>/postprocess.json when present (refused when it was chosen for "
                        "another training); off = none; or a postprocess.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    trained = load_trained(args.model)
    digests = checkpoint_digests(trained.card.checkpoints)
    record, source = find_record(args.postprocess, trained.card.header.model, trained.card.classes, digests)
    graph = onnx_graph(trained)
    meta = metadata(trained, record, source, digests)
    meta["check"] = check_parity(trained, graph, meta)
    with staged_files(args.out) as tmp:  # both files or neither
        write_atomic(tmp / GRAPH, graph)
        write_json(tmp / METADATA, meta)
    log.info("%s (%s, %d fold(s)) -> %s: opset %d, threshold %.3f, %s from %s; onnxruntime vs PyTorch max "
             "|difference| %.1g", args.model, meta["model"], meta["folds"], args.out / GRAPH, meta["opset"],
             meta["threshold"], describe(record), source, meta["check"]["max_abs_diff"])


if __name__ == "__main__":
    run_stage(main)
