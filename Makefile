# Two entry points for a fresh machine with Python >= 3.10:
#   make demo   -> creates .venv, installs pinned versions, trains the demo xAI-GAN on embedded digits
#   make test   -> creates .venv, installs pinned versions, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench device-check device-wheels clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull the newest build (GBs of CUDA wheels on Linux).
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/train_gan.py --config configs/gan/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python recipes/benchmark.py

# The prepared GPU check (scripts/device_check.sh): CUDA tests, benchmarks, a bf16 demo; RESULTS names the folder.
RESULTS ?= results/device_check
device-check: $(STAMP)
	bash scripts/device_check.sh $(RESULTS)

# The wheels an offline GPU machine lacks (diffusers, captum, ...) into wheels/, for
# `scripts/device_check.sh RESULTS --no-install` there (docs/gpu.md). Needs a registry, not the .venv.
device-wheels:
	bash scripts/device_wheels.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
