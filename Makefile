# Mesh112: `make run` starts the demo field, `make test` installs what it needs and runs everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint typecheck unit bench fuzz soak system-deps venv assets clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[lora,video,edge,mobile,dev,bench,regional]'
	touch $(STAMP)

venv: $(STAMP)

# The console's browser libraries (Leaflet, uPlot) from npm, pinned by web/package-lock.json, copied
# with their licences into relay/api/static/vendor; the node serves them, never a CDN.
ASSETS := relay/api/static/vendor/.stamp
$(ASSETS): web/package.json web/package-lock.json web/vendor.sh
	cd web && npm ci --no-audit --no-fund
	web/vendor.sh
	touch $(ASSETS)

assets: $(ASSETS)

system-deps:
	deploy/install-system-deps.sh

run: $(STAMP) $(ASSETS)
	$(BIN)/mesh112 demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check relay crypto field
	$(BIN)/mypy relay crypto ng112 analytics_edge mobile field

test: system-deps $(STAMP) $(ASSETS) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -m long -k fuzz

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m long -k soak

bench: $(STAMP) $(ASSETS)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
