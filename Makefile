# The two commands a newcomer needs: `make dev` (run the service) and `make test`.
# uv comes from PyPI into the machine's Python when it is missing.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: dev test lint install

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen

dev: install
	$(UV) run icodrip dev

test: install
	bash scripts/ensure-services.sh
	$(UV) run pytest

lint: install
	$(UV) run ruff check src tests bench clients
	$(UV) run ruff format --check src tests bench clients
	$(UV) run mypy src
	$(UV) run mypy clients/python/src
