# Two commands for a new machine: `make demo` (end-to-end on CPU, offline) and `make test`.
# Each installs what it needs: uv (through pip, if missing) and the locked environment.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: setup browser demo test lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@# The project's own bytecode too (pyproject's compile-bytecode covers installed packages).
	@$(UV) run --frozen python -m compileall -q llmfoundry scripts benchmarks

demo: setup
	HF_HUB_OFFLINE=1 $(UV) run --frozen python scripts/demo.py

# The web-UI test drives Debian's Chromium headless (Playwright finds it at /usr/bin/chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed (needs root and apt-get): the web-UI browser test will be skipped"

test: setup browser
	HF_HUB_OFFLINE=1 $(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen pyright
