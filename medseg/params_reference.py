"""Every typed params section in one table, and the params reference generated from it.

docs/reference/params.md and the comment above each key of params.yaml are written from the sections'
own rules and help (`python -m medseg.params_reference --write`); a test fails when either drifts.
Kept apart from medseg.params so that a stage validating `split` imports no network or reader.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from medseg import paths
from medseg.datasets.registry import DatasetParams
from medseg.losses import LossParams
from medseg.networks import model_section
from medseg.params import SECTIONS, Section, Spec
from models import MODEL_NAMES

REFERENCE = Path("docs/reference/params.md")


def all_sections() -> dict[str, type[Section]]:
    """Dotted section name -> its typed section, in params.yaml's order."""
    return ({"dataset": DatasetParams, **SECTIONS, "loss": LossParams}
            | {f"models.{m}": model_section(m) for m in MODEL_NAMES})


def rule(spec: Spec | dict[str, Spec]) -> str:
    """One key's rule in words: its type, its allowed values or range, and `auto` or null where taken."""
    if isinstance(spec, dict):
        return "mapping: " + ", ".join(f"{k} {rule(s)}" for k, s in spec.items())
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    words = "/".join(k.__name__ for k in kinds)
    if spec.choices is not None:
        words = " \\| ".join(str(c) for c in spec.choices)
    elif spec.low is not None and spec.high is not None:
        words += (f" in {'(' if spec.open_low else '['}{_number(spec.low)}, {_number(spec.high)}"
                  f"{')' if spec.open_high else ']'}")
    elif spec.low is not None:
        words += f" {'>' if spec.open_low else '>='} {_number(spec.low)}"
    return words + (" or auto" if spec.auto else "") + (" or null" if spec.nullable else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def reference() -> str:
    """docs/reference/params.md: one table per section (key, rule, what it does)."""
    lines = ["# Params reference", "",
             "Generated from the typed sections in `medseg/` by `python -m medseg.params_reference --write`; "
             "`tests/medseg/test_params_reference.py` fails when this file or the comments in params.yaml "
             "drift from them. Rules across keys (e.g. `train.min_lr <= train.lr`) are checked too and named "
             "in the error line. An `auto` value is resolved from the converted data's plan "
             "(data/slices/plans.json) or chosen on validation, and recorded where it is used.", ""]
    for name, section in all_sections().items():
        lines += [f"## `{name}`", "", "| key | rule | what it does |", "|---|---|---|"]
        helps = section.helps()
        lines += [f"| `{name}.{k}` | {rule(s)} | {helps[k]} |" for k, s in section.schema().items()]
        lines.append("")
    return "\n".join(lines)


def commented(params_text: str) -> str:
    """params.yaml with one `# help` line above each leaf key (the comments it had replaced)."""
    helps = {f"{n}.{k}": h for n, s in all_sections().items() for k, h in s.helps().items()}
    out, stack = [], []
    for line in params_text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = re.match(r"( *)([A-Za-z_]\w*):", line)
        if match:
            depth = len(match.group(1)) // 2
            stack = stack[:depth] + [match.group(2)]
            dotted = ".".join(stack)
            if dotted in helps:
                out.append(f"{match.group(1)}# {helps[dotted]}")
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m medseg.params_reference", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite docs/reference/params.md and the comments "
                                                             "of params.yaml (default: report drift, exit 1)")
    args = parser.parse_args()
    targets = {REFERENCE: reference(), paths.PARAMS: commented(paths.PARAMS.read_text())}
    stale = [p for p, text in targets.items() if not p.exists() or p.read_text() != text]
    if args.write:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(targets[path])
    for path in stale:
        print(f"{path}: {'rewritten' if args.write else 'out of date; run python -m medseg.params_reference --write'}")
    sys.exit(1 if stale and not args.write else 0)


if __name__ == "__main__":
    main()
