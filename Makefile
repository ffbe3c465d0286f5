# Two commands do all set-up on a fresh machine:
#   make demo   venv + install + a small real study (Fashion-MNIST, local processes, a DuckDB file), then its
#               comparison table and its comparisons
#   make test   venv + install + the whole test suite
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APT_TEST := dataset-fashion-mnist chromium chromium-driver docker-compose slurm-wlm munge shellcheck
APT_DEMO := dataset-fashion-mnist
DEMO_RESULTS ?= results/demo

.PHONY: demo test test-fast venv system-deps-test system-deps-demo bench clean

venv: $(STAMP)

# torch==2.14.1 / torchvision==0.29.1 come from this machine's wheel cache through pip's configured find-links.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Debian packages: real Fashion-MNIST, and Chromium + its driver for the dashboard test. Installed only when missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi
endef

system-deps-test:
	$(call apt_install,$(APT_TEST))

system-deps-demo:
	$(call apt_install,$(APT_DEMO))

demo: venv system-deps-demo
	$(BIN)/resnet-study sweep local jobs/demo.yaml --parallel 2 --results-dir $(DEMO_RESULTS)
	$(BIN)/resnet-study results table --dataset fashion-mnist --results-dir $(DEMO_RESULTS)
	$(BIN)/resnet-study results compare --results-dir $(DEMO_RESULTS)
	@echo
	@echo "Next, with the venv on PATH (. $(VENV)/bin/activate):"
	@echo "  resnet-study serve --results-dir $(DEMO_RESULTS)    # the dashboard: open http://127.0.0.1:8000/ (loopback: no token)"
	@echo "  resnet-study report --out report/demo --results-dir $(DEMO_RESULTS)    # static HTML + Markdown: report/demo/index.html"
	@echo '  duckdb -readonly $(DEMO_RESULTS)/results.duckdb "SELECT layers, seed, epochs_done, round(100 * test_error, 2) AS test_err_pct FROM runs ORDER BY ALL"'
	@echo "  resnet-study sweep status demo.yaml --results-dir $(DEMO_RESULTS)    # each cell and its runs"
	@echo "More: README.md; docs/laptop.md (train, cells, sweeps), docs/gpu-box.md, docs/cluster.md, docs/reading-results.md"

# Every run ends with its 25 slowest tests, so a slow test shows in every log (CI adds a time budget: .ci/run).
test: venv system-deps-test
	$(BIN)/pytest -q --durations=25

test-fast: venv system-deps-test
	$(BIN)/pytest -q -m "not slow" --durations=10

bench: venv system-deps-demo
	$(BIN)/resnet-study bench train --device cpu --n 3 --dataset fashion-mnist

clean:
	rm -rf $(VENV) results test-artifacts .pytest_cache
