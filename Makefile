# Entry points. `make demo` and `make test` each set up everything they need first (idempotent).
PYTHON := .venv/bin/python

.PHONY: setup demo test test-unit bench
setup:
	bash hack/setup.sh

demo:
	bash hack/setup.sh python
	.venv/bin/warmscale demo

test: setup
	$(PYTHON) -m pytest -ra

test-unit: setup
	$(PYTHON) -m pytest -ra -m "not integration"

bench: setup
	$(PYTHON) bench/policies.py
	$(PYTHON) bench/forecast.py
	$(PYTHON) bench/loader.py
