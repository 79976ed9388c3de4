"""Export a trained model for deployment: DIR/model.onnx (one graph; dynamic batch, height and width)
and DIR/model.json (the preprocessing, the uint8 scaling, the threshold and min_area that predict needs).

--model is a checkpoint (best.pt) or a k-fold model folder (fold_<k>/best.pt + ensemble.json), which
becomes one graph averaging the folds' probabilities, thresholded at ensemble.json's threshold. The
export is checked before it is written: onnxruntime must match PyTorch within 1e-4 on random inputs.
Run it with `python -m stages.predict --model DIR ...` (onnxruntime; PyTorch is not imported).

Usage: python -m stages.export --model data/models/unet/best.pt --out DIR [--min-area N]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medseg.cli import run_stage
from medseg.errors import MedsegError
from medseg.onnx_export import check_parity, metadata, onnx_graph
from medseg.onnx_runtime import GRAPH, METADATA
from medseg.outputs import staged_files, write_atomic, write_json
from medseg.trained import load_trained

log = logging.getLogger("medseg.export")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a best.pt checkpoint or a k-fold model folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; other files kept)")
    parser.add_argument("--min-area", type=int, help="smallest kept component in pixels at the model's size, "
                        "recorded in model.json (evaluate's choice: results/evaluate/<model>/metrics.json); default 0")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.min_area is not None and args.min_area < 0:
        raise MedsegError(f"--min-area={args.min_area} must be >= 0")
    trained = load_trained(args.model)
    graph = onnx_graph(trained)
    meta = metadata(trained, args.min_area)
    meta["check"] = check_parity(trained, graph, meta)
    with staged_files(args.out) as tmp:  # both files or neither
        write_atomic(tmp / GRAPH, graph)
        write_json(tmp / METADATA, meta)
    log.info("%s (%s, %d fold(s)) -> %s: opset %d, threshold %.3f, min_area %d; onnxruntime vs PyTorch max "
             "|difference| %.1g", args.model, meta["model"], meta["folds"], args.out / GRAPH, meta["opset"],
             meta["threshold"], meta["min_area"], meta["check"]["max_abs_diff"])


if __name__ == "__main__":
    run_stage(main)
