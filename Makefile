# The README's two commands: `make demo` and `make test`. Each builds .venv on its own.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := .demo

.PHONY: demo test lint bench audit clean chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# rapidocr-onnxruntime names the GUI opencv-python (needs libGL); pyproject brings the headless one instead.
OCR := rapidocr-onnxruntime==1.4.4

$(STAMP): pyproject.toml constraints.txt Makefile | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test,samples]'
	$(BIN)/pip install -q --no-deps $(OCR)
	touch $(STAMP)

# The browser tests drive Debian's chromium through Playwright, which cannot download browsers here. Installed
# when missing and possible; without it those tests are skipped and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends chromium ) >/dev/null 2>&1 \
	  || echo "could not install chromium: the browser tests will be skipped"; }

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python -m vlsearch.images.samples $(DEMO)/photos
	$(BIN)/vlsearch index $(DEMO)/photos --library $(DEMO)/library --model offline --caption-model offline
	$(BIN)/vlsearch search "a cat" --library $(DEMO)/library --k 3
	$(BIN)/vlsearch search "a cup of coffee" --library $(DEMO)/library --k 3
	$(BIN)/vlsearch search '"markers of the coins"' --mode keyword --library $(DEMO)/library --k 3
	$(BIN)/vlsearch caption $(DEMO)/photos/chelsea.jpg --caption-model offline
	$(BIN)/vlsearch tags run --library $(DEMO)/library
	$(BIN)/vlsearch tags show $(DEMO)/photos/chelsea.jpg --library $(DEMO)/library
	$(BIN)/vlsearch serve --library $(DEMO)/library

# Every benchmark (about an hour on a 2-core CPU machine); `python -m bench WHICH` runs one. Results: bench/results.
bench: $(STAMP)
	$(BIN)/python -m bench all --out bench/results

# Known vulnerabilities in the installed dependencies (PyPI's advisory data, through pip-audit). Needs network
# access to pypi.org; --strict fails when a package could not be checked instead of passing it silently.
audit: $(STAMP)
	$(BIN)/pip install -q 'pip-audit>=2.7'
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

clean:
	rm -rf $(DEMO) .pytest_cache
