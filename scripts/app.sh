#!/usr/bin/env bash
# Install (first run) and start Transferability Explorer on http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m streamlit run app.py "$@"
