PYTHON ?= python3
WORKDIR ?= runs/demo
STAMP := .make-installed

.PHONY: install test test-all lint format demo bench clean

# Installs once per checkout (a stamp file), so `make demo` and `make test` work on a fresh clone.
# torch is pinned to the CPU build; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

test-all: $(STAMP)
	$(PYTHON) -m pytest -q -m ""

lint: $(STAMP)
	ruff check s4t_edge tests benchmarks
	ruff format --check s4t_edge tests benchmarks

format:
	ruff format s4t_edge tests benchmarks
	ruff check --fix s4t_edge tests benchmarks

demo: $(STAMP)
	$(PYTHON) -m s4t_edge.cli.main demo --workdir $(WORKDIR)

bench: $(STAMP)
	$(PYTHON) benchmarks/run_cpu.py

clean:
	rm -rf build *.egg-info .pytest_cache $(STAMP)
