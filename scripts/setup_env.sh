#!/usr/bin/env bash
# Creates the virtual environment (.venv, or $BLINDFAST_VENV) if missing and installs blindfast with its test
# dependencies into it, editable: Python started anywhere, the repository root included, imports this tree and its
# built extension (build/<wheel tag>/). Idempotent: a second run only rebuilds the extension (after a csrc/ change).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${BLINDFAST_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# deepinv needs torchvision; torch 2.14.1 + torchvision 0.29.1 is the pair that imports together (pinned, so pip
# never picks another torch build).
"${pip[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" install -q -e ".[test]"
echo "blindfast installed in $venv"
