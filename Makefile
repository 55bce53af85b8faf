PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint docs clean

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

test: $(STAMP) lint docs
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m pipekit_cycle
	$(PY) -m pipekit_cycle.experiment.demo --out runs/demo
	$(PY) -m conformance > runs/demo/conformance.txt; status=$$?; \
	  echo "conformance (full table in runs/demo/conformance.txt):"; tail -n 1 runs/demo/conformance.txt; exit $$status

clean:
	rm -rf $(VENV) site
