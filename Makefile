PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint docs clean wheel-check

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,dev,docs]'
	# The peer the interop tests compare against; --no-deps: its pins clash with ours, and the
	# classes under test need only torch (tests/interop/conftest.py).
	$(PY) -m pip install --quiet --no-deps ocean4dvarnet==1.0.6
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

# The documentation site into site/ (guides, and the API reference from the docstrings); --strict: a broken
# reference or anchor fails. The theme's fonts are off and formulas become MathML at build time
# (docs/_hooks/mathml.py), so nothing is fetched at build time or when reading the site.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# The conformance suite runs once, in full, as the README shows it: each dtype in a fresh process
# of its own (a float32 run alone starts with JAX's x64 off, which a test process never shows);
# under pytest only its one-case-per-check sweep (PIPEKIT_QUICK), which tests the pytest route.
test: $(STAMP) lint docs
	PIPEKIT_QUICK=1 $(PY) -m pytest -q tests
	$(PY) -m conformance
	$(PY) -m conformance --dtype float32

# The wheel as a user installs it: built, installed with each framework's extra alone into a fresh
# environment outside the checkout, and held to the golden files it ships (.ci/wheel-check). Needs no .venv.
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel-check

demo: $(STAMP)
	$(PY) -m pipekit_cycle
	$(PY) -m pipekit_cycle.experiment.demo --out runs/demo
	$(PY) -m conformance > runs/demo/conformance.txt; status=$$?; \
	  echo "conformance (full table in runs/demo/conformance.txt):"; tail -n 1 runs/demo/conformance.txt; exit $$status

clean:
	rm -rf $(VENV) site
