# Two commands for a new machine: `make demo` (end-to-end on CPU, offline) and `make test`.
# Each installs what it needs: uv (through pip, if missing) and the locked environment.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: setup demo test lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

demo: setup
	HF_HUB_OFFLINE=1 $(UV) run --frozen python scripts/demo.py

test: setup
	HF_HUB_OFFLINE=1 $(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen pyright
