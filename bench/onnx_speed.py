"""The ONNX row of `make bench`: predict's throughput with onnxruntime against PyTorch fp32, on this CPU.

Each model is built at its params.yaml settings (random weights, as elsewhere in the bench), exported
by the export stage's own code, and both runtimes score the same uint8 slices at the same batch size
and thread count in alternating rounds; the best round of each counts, so background load on the
machine hits both alike. PyTorch is `predict_probs` in fp32 (no autocast), NCHW, as predict runs it.

Alone: python -m bench.onnx_speed [--images N] [--rounds R] (the test slices of data/slices when they
exist, else random slices at convert.size; the speed of dense convolutions does not depend on pixel values).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import paths
from medseg.cli import run_stage
from medseg.hardware import cpu_has_native_bf16, device_name
from medseg.inference import predict_probs
from medseg.networks import load_model_params
from medseg.onnx_export import metadata, onnx_graph
from medseg.onnx_runtime import OnnxModel
from medseg.datasets.registry import DatasetParams, planned_size
from medseg.params import ConvertParams
from medseg.slices import dataset_info, load_arrays, split_rows
from medseg.classes import BINARY
from medseg.model_card import Header, ModelCard, Threshold
from medseg.model_loader import TrainedModel
from models import MODEL_NAMES, build_model

CPU = torch.device("cpu")


def _rate(run, images: np.ndarray) -> float:
    started = time.perf_counter()
    run(images)
    return len(images) / (time.perf_counter() - started)


def onnx_vs_torch(models: dict[str, dict[str, Any]], images: np.ndarray, preprocess: dict[str, Any],
                  batch: int = 32, rounds: int = 3) -> dict[str, Any]:
    """images/s of onnxruntime and of PyTorch fp32 on `images` (N, H, W, C) uint8, per model."""
    threads = torch.get_num_threads()
    out = {}
    for name, params in models.items():
        torch.manual_seed(0)
        net = build_model(name, images.shape[3], **params).eval()
        header = Header(name, params, images.shape[3], preprocess)
        trained = TrainedModel([net], ModelCard(header, Threshold(0.5, "bench", False), [Path(name)], BINARY))
        session = OnnxModel(onnx_graph(trained), metadata(trained, None), threads=threads)
        runs = {"torch_ips": lambda x: predict_probs(net, x, CPU, batch), "ort_ips": lambda x: session.probs(x, batch_size=batch)}
        diff = float(np.abs(runs["ort_ips"](images[:batch]) - runs["torch_ips"](images[:batch])).max())  # and warm-up
        rates: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(rounds):
            for key, run in runs.items():
                rates[key].append(_rate(run, images))
        best = {key: max(values) for key, values in rates.items()}
        out[name] = {**best, "ort_over_torch": best["ort_ips"] / best["torch_ips"], "max_abs_diff": diff}
    return {"cpu": device_name(CPU), "avx512_bf16": cpu_has_native_bf16(), "threads": threads, "batch": batch,
            "images": len(images), "size": list(images.shape[1:3]), "rounds": rounds, "torch_dtype": "fp32",
            "models": out}


def table(result: dict[str, Any]) -> str:
    rows = ["| model | onnxruntime img/s | PyTorch fp32 img/s | ORT / PyTorch | max abs diff |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {m['ort_ips']:.0f} | {m['torch_ips']:.0f} | {m['ort_over_torch']:.2f}x | {m['max_abs_diff']:.1g} |"
             for name, m in result["models"].items()]
    rows.append(f"{result['images']} images of {result['size'][0]}x{result['size'][1]}, batch {result['batch']}, "
                f"{result['threads']} threads each, best of {result['rounds']} alternating rounds; CPU: {result['cpu']} "
                f"(avx512_bf16: {'yes' if result['avx512_bf16'] else 'no'})")
    return "\n".join(rows)


def default_inputs(n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Up to n test slices of data/slices and their preprocessing, or n random slices at convert.size."""
    if (paths.SLICES / "info.json").exists() and paths.SPLIT_CSV.exists():
        info = dataset_info()
        images, _ = load_arrays(paths.SLICES, split_rows("test")["slice_id"].tolist()[:n], info["channels"])
        return images, info
    cfg = ConvertParams.load()
    size = planned_size(DatasetParams.load().name, cfg)
    pre = {"size": size, "channels": 1, "window_level": cfg.window_level,
           "window_width": cfg.window_width, "dataset": "random"}
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 1), dtype=np.uint8), pre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="slices scored per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per runtime")
    args = parser.parse_args()
    images, pre = default_inputs(args.images)
    result = onnx_vs_torch({name: load_model_params(name) for name in MODEL_NAMES}, images, pre, rounds=args.rounds)
    print(table(result))


if __name__ == "__main__":
    run_stage(main)
