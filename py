#!/bin/sh
# The interpreter dvc.yaml's stage commands run with: an activated environment's python when one is
# active, else this project's .venv (so `.venv/bin/dvc repro` works without activating it: DVC runs
# the commands with its caller's PATH), else the python on PATH.
root=$(cd "$(dirname "$0")" && pwd)
if [ -z "${VIRTUAL_ENV}${CONDA_PREFIX}" ] && [ -x "$root/.venv/bin/python" ]; then
    exec "$root/.venv/bin/python" "$@"
fi
exec python "$@"
