# Two commands for a fresh machine:  make run  (train + evaluate on scikit-learn's digits)  and  make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

run: $(STAMP)
	$(PY) run.py train --config configs/digits.yaml --out runs/digits

test: $(STAMP)
	$(PY) -m pytest

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned: on this machine they come from local disk (see README).
	$(PY) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
