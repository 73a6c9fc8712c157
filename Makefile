# Two entry points for a fresh machine with only Python 3.11 and pip:
#   make run   - create .venv, install, train + evaluate seq-JEPA on the embedded 3diebench-mini
#   make test  - create .venv, install, run the test suite
# The install shows pip's progress and pins every package, transitive ones included, to
# constraints.txt (the lock file); `make lock` regenerates it from the installed .venv.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint venv lock clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt --upgrade pip
	@echo "installing seqbench and its pinned dependencies (torch and its CUDA libraries are a few GB: several minutes)"
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m benchmark.run --method seqjepa --config benchmark/configs/pattern.yaml $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Regenerate the lock file from the installed environment (after changing a pin in pyproject.toml:
# edit it, `make venv` installs the new version, `make lock` records every package's version).
lock: $(STAMP)
	{ echo "# Lock file: every package of the environment, transitive ones included (pip freeze of a"; \
	  echo "# fresh 'make venv', regenerated with 'make lock'). Used as pip constraints by the Makefile"; \
	  echo "# and environment.yml; tests/test_packaging.py checks it against pyproject.toml."; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v '^#'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
