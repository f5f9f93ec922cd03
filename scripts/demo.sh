#!/usr/bin/env bash
# The main job (README's first command, after setup): see README.md "The main job".
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m recipes.model_summary "$@"
