# Two entry points that do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/interest demo --out demo-output

# tests/test_xmp.py reads sidecars back with ExifTool: installed here when missing and root (Debian/Ubuntu)
test: $(STAMP)
	command -v exiftool >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq libimage-exiftool-perl) || true
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo-output .pytest_cache
