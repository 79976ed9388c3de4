# Entry points: `make repro` runs the whole pipeline, `make test` runs the linter (ruff) and the
# tests, `make bench` times the training loop on this machine (results/bench.json; not a DVC stage),
# `make doctor` prints what this machine offers a training run (versions, devices, bf16, a conv benchmark).
# Each creates .venv (python3 -m venv) when missing and installs requirements.txt into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: repro test bench doctor

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.run

doctor: $(STAMP)
	$(PY) -m medseg.doctor
