# thingmask: `make demo` runs the whole pipeline on the bundled synthetic data; `make test` runs
# the test suite. Both create .venv and install on first use (idempotent afterwards).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test lint bench clean-venv install

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ok')"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/thingmask demo --config configs/demo.yaml

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests scripts notebooks
	$(PY) -m ruff format --check src tests scripts
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# benchmark figures, printed: the demo per engine, then the video stage side by side
# (scripts/bench_pipeline.py; e.g. make bench BENCH_ARGS="--size 720p --json bench.json")
bench: $(STAMP)
	$(PY) scripts/benchmark.py
	$(PY) scripts/bench_pipeline.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
