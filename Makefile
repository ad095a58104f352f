# fclip-workbench: `make lab` sets everything up and starts JupyterLab; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
# CPU/GPU wheels that work together (Python 3.11); override to use others.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: setup lab test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install $(TORCH_PINS)
	$(VENV)/bin/pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(VENV)/bin/fclip lab

test: setup
	$(VENV)/bin/python -m pytest -q

test-all: setup
	$(VENV)/bin/python -m pytest -q -m "slow or not slow"

bench: setup
	$(VENV)/bin/python benchmarks/bench_embed_cache.py

clean:
	rm -rf $(VENV) .pytest_cache
