# Set-up and the two entry points of the README:  `make demo`  and  `make test`.
# torch is pinned to 2.13.0 first: on the dev/CI machines that is a local CPU build; pyproject's range
# (torch>=2.1) is then already satisfied, so pip never pulls a multi-GB CUDA build by accident.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install install-slicer demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,plots]"
	touch $@

# The real MRML layer (no Qt) for the Slicer module's logic tests.
install-slicer: $(VENV)/.installed-slicer

$(VENV)/.installed-slicer: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[slicer]"
	touch $@

demo: install
	$(VENV)/bin/xrayvos demo --out xrayvos_demo

# Lint first (ruff is pinned in pyproject's test extra; settings in [tool.ruff]), then every test.
test: install install-slicer
	$(VENV)/bin/ruff check XRayVOSLib XRayVOS Testing tools
	$(PY) -m pytest -q Testing

bench: install
	$(VENV)/bin/xrayvos bench

clean:
	rm -rf $(VENV) xrayvos_demo .pytest_cache
