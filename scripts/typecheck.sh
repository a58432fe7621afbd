#!/usr/bin/env bash
# mypy on the installed namespace, iwlab. The folders of this checkout are iwlab's subpackages
# (pyproject's package-dir), which mypy cannot see through the editable install's import hook:
# it checks a tree of symlinks named as installed instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
mkdir -p "$tree/iwlab"
for folder in app backends widgets resources; do ln -sfn "../../../$folder" "$tree/iwlab/$folder"; done
cd "$tree"
exec ../../.venv/bin/mypy --config-file ../../pyproject.toml "$@"
