#!/usr/bin/env bash
# The test command: the whole suite on the CPU (GPU-only tests skip and say why).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -rs "$@"
