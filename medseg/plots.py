"""Static figures (matplotlib) that a person reads: overlays, per-case Dice, curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TP, FP, FN = (0, 200, 0), (230, 0, 0), (0, 90, 255)
PREDICTED = (255, 200, 0)  # predict's overlay: predicted foreground where no truth is known (amber, none of TP/FP/FN)
PAGE_INCHES = 13.5  # at 100 dpi: every figure fits a 1,400 px page


def overlay(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB uint8: the image in grey with true positives green, false positives red, false negatives
    blue; without a truth (`gt` None: predict) the prediction in amber."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    regions = ((pred, PREDICTED),) if gt is None else ((gt & pred, TP), (~gt & pred, FP), (gt & ~pred, FN))
    for region, colour in regions:
        rgb[region] = (1 - alpha) * rgb[region] + alpha * np.array(colour, np.float32)
    return rgb.round().astype(np.uint8)


CLASS_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60))  # distinct colours (Trubetskoy's list), cycled past eight classes


def class_colour(k: int) -> tuple[int, int, int]:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def class_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 of one slice with K classes ((K, H, W) bool truth and prediction): each class's
    prediction filled in its colour, its truth outlined in the same colour."""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for k in range(len(pred)):
        colour = np.array(class_colour(k), np.float32)
        rgb[pred[k]] = (1 - alpha) * rgb[pred[k]] + alpha * colour
        inner = np.zeros_like(truth[k])
        inner[1:-1, 1:-1] = (truth[k][1:-1, 1:-1] & truth[k][:-2, 1:-1] & truth[k][2:, 1:-1]
                             & truth[k][1:-1, :-2] & truth[k][1:-1, 2:])
        rgb[truth[k] & ~inner] = colour
    return rgb.round().astype(np.uint8)


def overlay_grid(panels: list[tuple[str, np.ndarray]], title: str, path: Path, columns: int = 4,
                 class_names: list[str] | None = None) -> None:
    """The overlays of a model in a grid; the key is the TP/FP/FN code, or with `class_names` one
    colour per class (filled: prediction; outlined: truth)."""
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, rgb) in zip(axes.ravel(), panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(label, fontsize=8)
    if class_names is None:
        fig.suptitle(title, fontsize=10)
        colours, names = (TP, FP, FN), ["true positive", "false positive", "false negative"]
    else:
        fig.suptitle(f"{title}  (filled: prediction; outlined: truth)", fontsize=10)
        colours, names = [class_colour(k) for k in range(len(class_names))], class_names
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(c) / 255) for c in colours]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dice_boxplot(per_case: dict[str, pd.Series], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(per_case)
    ax.boxplot([per_case[n].dropna().to_numpy() for n in names], tick_labels=names, showmeans=True)
    ax.legend([plt.Line2D([], [], color="C1"), plt.Line2D([], [], color="green", marker="^", linestyle="")],
              ["median", "mean"], loc="lower left", fontsize=8)
    ax.set_ylabel("per-case 3D Dice (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def line_chart(series: dict[str, pd.DataFrame], x: str, y: str, xlabel: str, ylabel: str, path: Path) -> None:
    """One line per model (e.g. training curves, PR curves) on one chart."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, frame in series.items():
        ax.plot(frame[x], frame[y], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def forest_plot(metrics: dict[str, dict], path: Path) -> None:
    """Each model's mean per-case Dice and dice_fg (cases with foreground) with their 95% CIs:
    overlapping bars are the first sign that a ranking is noise."""
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(names) + 1.6))
    for offset, key, colour, meaning in ((-0.15, "dice", "#1f5fa8", "dice (every case)"),
                                         (0.15, "dice_fg", "#d9822b", "dice_fg (cases with foreground)")):
        for row, name in enumerate(names):
            m = metrics[name]
            if m.get(key) is None:
                continue
            low, high = m.get(f"{key}_ci_low", m[key]), m.get(f"{key}_ci_high", m[key])
            ax.errorbar(m[key], row + offset, xerr=[[m[key] - low], [high - m[key]]], fmt="o", color=colour,
                        capsize=4, label=meaning if row == 0 else None)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, ax.get_xlim()[0]), 1.0)
    ax.set_xlabel("mean per-case Dice on the test cases, 95% bootstrap CI")
    ax.grid(axis="x", alpha=0.3)
    # above the axes: inside, the legend covered the error bars of whichever row sat under it
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def map_grid(rows: list[tuple[str, np.ndarray | None, np.ndarray, list]], title: str, path: Path,
             gates: bool = False) -> None:
    """One figure row per (label, image or None, truth, panels): the slice with its truth outlined
    (None: the label alone), then each panel (title, map, fixed) stretched over the slice: on its own
    colour scale (viridis), or when `fixed` on a 0-1 scale (magma) over the image, the truth outlined;
    a None panel is an empty cell. Coarse maps keep their pixels (no smoothing)."""
    columns = 1 + max(len(panels) for *_, panels in rows)
    cell = min(1.75, PAGE_INCHES / columns)  # many panels (attn_unet's gates): smaller cells, not a wider page
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell * columns, 1.1 * cell * len(rows) + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    grey = None
    for row, (label, image, truth, panels) in zip(axes, rows):
        if image is not None:
            grey = image.mean(axis=2) if image.ndim == 3 else image
            row[0].imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            row[0].contour(truth, levels=[0.5], colors="lime", linewidths=0.7)
            row[0].set_title(label, fontsize=7)
        else:
            row[0].text(0.5, 0.5, label, ha="center", va="center", fontsize=7, transform=row[0].transAxes)
        extent = (-0.5, truth.shape[1] - 0.5, truth.shape[0] - 0.5, -0.5)
        for ax, panel in zip(row[1:], panels):
            if panel is None:
                continue
            name, values, fixed = panel
            if fixed:
                if grey is not None:
                    ax.imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax.imshow(values, cmap="magma", vmin=0, vmax=1, alpha=0.6, extent=extent, interpolation="nearest")
                ax.contour(truth, levels=[0.5], colors="lime", linewidths=0.5)
            else:
                ax.imshow(values, cmap="viridis", extent=extent, interpolation="nearest")
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
            ax.set_title(name, fontsize=7)
    fig.suptitle(f"{title}: encoder stage means (own scale); {'attention gates and ' if gates else ''}Grad-CAM "
                 "(0-1, magma); truth outlined in green", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def epoch_panels(grids: list[tuple[str, Path]], title: str, path: Path) -> None:
    """Per-epoch prediction grids (each: rows of image | truth | prediction, as training logged them)
    side by side, each captioned with its epoch and its three columns titled."""
    fig, axes = plt.subplots(1, len(grids), figsize=(min(3.2 * len(grids), PAGE_INCHES), 4.6), squeeze=False)
    for ax, (caption, grid) in zip(axes[0], grids):
        picture = plt.imread(grid)
        ax.imshow(picture, interpolation="nearest")
        width = picture.shape[1]
        ax.set_xticks([width / 6, width / 2, 5 * width / 6], ["image", "truth", "prediction"], fontsize=8)
        ax.xaxis.tick_top()
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=9)
    fig.suptitle(f"{title}: val slices with the most foreground, thresholded at train.threshold", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # tight_layout alone cut the epoch captions in half
    plt.close(fig)
