"""MSD Task06 lung tumour CT (`dataset.name: lung`): the Decathlon reader with the task's published count."""
from __future__ import annotations

from medseg.datasets.msd import CHANNELS, count_summary, list_cases, read_case

__all__ = ["CHANNELS", "EXPECTED", "count_summary", "list_cases", "read_case"]

EXPECTED = {"cases": 63}  # MSD Task06_Lung training cases
