PYTHON ?= python3
RUNS ?= runs

.PHONY: install test test-all lint format demo bench clean

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest -q

test-all:
	$(PYTHON) -m pytest -q -m ""

lint:
	ruff check s4t_edge tests benchmarks
	ruff format --check s4t_edge tests benchmarks

format:
	ruff format s4t_edge tests benchmarks
	ruff check --fix s4t_edge tests benchmarks

demo:
	s4t-edge demo --workdir $(RUNS)/demo

bench:
	$(PYTHON) benchmarks/run_cpu.py --out benchmarks/results

clean:
	rm -rf build *.egg-info .pytest_cache
