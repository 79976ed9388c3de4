"""Test-time augmentation by horizontal mirroring, one rule for the torch and the onnxruntime paths.

Hand-written: two lines that neither torch nor numpy provides for both array kinds, and MONAI's TTA
classes resample rather than mirror; kept free of torch so the ONNX path does not import it."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

A = TypeVar("A")
M = TypeVar("M")


def mirrored(a: A, axis: int = -1) -> A:
    """`a` mirrored along `axis` (a torch tensor, or a contiguous numpy copy that onnxruntime takes)."""
    if hasattr(a, "flip"):  # torch.Tensor
        return a.flip(axis)
    return np.ascontiguousarray(np.flip(a, axis))


def with_tta(infer: Callable[[M, A], A], width_axis: int = 2) -> Callable[[M, A], A]:
    """`infer(model, images)` averaged with its run on the mirrored images (N x H x W x C: width axis 2)."""
    return lambda model, images: flip_averaged(lambda x: infer(model, x), images, width_axis)


def flip_averaged(probs_of: Callable[[A], A], x: A, width_axis: int = -1) -> A:
    """The mean of the probabilities of `x` and of its mirror image mirrored back; `x`'s width lies on
    `width_axis`, the probabilities' width on the last axis."""
    return (probs_of(x) + mirrored(probs_of(mirrored(x, width_axis)))) / 2
