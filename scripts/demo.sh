#!/usr/bin/env bash
# Quick start (a): set up .venv and run every MSKQuant pipeline on data it makes itself
# (plus ../shared real data when present). Prints the report folder.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
exec "$ROOT/.venv/bin/mskquant" demo "$@"
