#!/usr/bin/env bash
# Set up everything the tests need, then run the linters and the whole test suite.
# Fails on any failure, and on zero tests collected (pytest exits 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
