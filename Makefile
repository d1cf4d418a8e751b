# Two commands on a fresh machine: `make run` (serve on :8000) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean browser

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11 ($(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned, so nothing can pull a newer CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vislex serve

test: $(STAMP) browser
	$(PY) -m pytest -q

# tests/browser drive Debian's chromium (Playwright comes with the dev extras and never downloads a browser):
# installed with apt when running as root, otherwise those tests skip and say why. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing chromium (apt) for the browser tests"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	        || echo "chromium could not be installed: browser tests will skip"; \
	    else echo "no chromium and no root/apt to install it: browser tests will skip"; fi; }

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .vislex .pytest_cache
