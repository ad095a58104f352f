# fclip-workbench: `make lab` sets everything up and starts JupyterLab; `make test` runs the tests (the CI suite).
PYTHON ?= python3
VENV ?= .venv
# CPU/GPU wheels that work together (Python 3.11); override to use others (`make setup TORCH_PINS="torch==..."`).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Where that pair comes from: PyPI's Linux torch is the CUDA build (5.3 GB in the venv). A laptop with no GPU
# takes PyTorch's CPU-only wheels instead: `make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
# Extras of the package to install (CI adds the Ray engine's: `make test EXTRAS=dev,ray`).
EXTRAS ?= dev
# Holds the TORCH_PINS and EXTRAS of the last install; rewritten only when they change, so the stamp goes stale then.
PINS := $(VENV)/.torch-pins
PYTEST := $(VENV)/bin/python -m pytest
# An offline room kit (`fclip workshop pack KIT`): `make lab KIT=/media/usb/fclip-kit` installs from its
# wheels with no network (pip --no-index) and copies its data sets into data/.
KIT ?=
PIP_SOURCE := $(if $(KIT),--no-index --find-links $(abspath $(KIT))/wheels/linux-x86_64,)
TORCH_SOURCE := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),$(PIP_SOURCE))

.PHONY: setup git-filter lab test lint typecheck test-slow test-all bench docs screenshots clean FORCE

$(PINS): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_PINS) $(TORCH_INDEX) [$(EXTRAS)]' | cmp -s - $@ || echo '$(TORCH_PINS) $(TORCH_INDEX) [$(EXTRAS)]' > $@

# Re-installs when pyproject.toml or TORCH_PINS change.
$(STAMP): pyproject.toml $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_SOURCE) --upgrade pip
	$(VENV)/bin/pip install $(TORCH_SOURCE) $(TORCH_PINS)
	$(VENV)/bin/pip install $(PIP_SOURCE) -e ".[$(EXTRAS)]"
	$(if $(KIT),$(VENV)/bin/fclip workshop unpack $(abspath $(KIT)))
	touch $(STAMP)

setup: $(STAMP) git-filter

# Outputs never reach a commit (.gitattributes): git runs notebooks through nbstripout when staging, and
# `git status` stays clean after a notebook was only run. Outside a git checkout there is nothing to set.
git-filter: $(STAMP)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		git config filter.nbstripout.clean '"$(abspath $(VENV))/bin/python" -m nbstripout --keep-id'; \
		git config filter.nbstripout.smudge cat; \
		git config diff.ipynb.textconv '"$(abspath $(VENV))/bin/python" -m nbstripout --keep-id -t'; \
	fi

lab: setup
	$(VENV)/bin/fclip lab

# The CI suite: everything but the `slow` tests (pyproject.toml: addopts = -m 'not slow').
test: setup
	$(PYTEST) -q

# Lint: errors, not style (pyproject.toml [tool.ruff]), then the type check; CI runs it after the tests.
lint: setup typecheck
	$(VENV)/bin/ruff check fclip_workbench tests benchmarks notebooks

# Type check of the package (pyproject.toml [tool.mypy]: which files, which modules are still left out).
typecheck: setup
	$(VENV)/bin/mypy

# Only the slow tests (recipe reproductions on the real data sets): weekly and before shipping new weights.
test-slow: setup
	$(PYTEST) -q -m slow

test-all: setup
	$(PYTEST) -q -m "slow or not slow"

bench: setup
	$(VENV)/bin/python benchmarks/bench_embed_cache.py

# The documentation site (mkdocs.yml, docs/) into build/site/, in strict mode: a broken link or reference fails.
# Installs the `docs` extra of pyproject.toml the first time.
docs: setup
	$(VENV)/bin/python -c "import material, mkdocstrings_handlers.python, mkdocs_gen_files, mkdocs_literate_nav, mkdocs_section_index" 2>/dev/null \
		|| $(VENV)/bin/pip install -e ".[$(EXTRAS),docs]"
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

# The documentation's screenshots, taken by the browser tests themselves (Chromium at /usr/bin/chromium).
screenshots: setup
	FCLIP_DOC_SCREENSHOTS=docs/assets/screenshots $(PYTEST) -q tests/test_label_app.py tests/test_explorer_browser.py -k "voila_app_labels or explorer_in_jupyterlab"

clean:
	rm -rf $(VENV) .pytest_cache
