#!/usr/bin/env bash
# The packages noisylab needs that the bare, offline GPU machine lacks (its python3 is 3.12
# with torch, torchvision, pytorch-lightning, torchmetrics, scikit-learn, scipy, matplotlib,
# pytest, joblib), as CPython 3.12 x86-64 wheels in .whl/ (git-ignored; carried to the device
# machine beside the working tree). The versions are those of .venv, so that the GPU run uses
# what the CPU tests used. antlr4-python3-runtime 4.9.3 has no wheel on PyPI: built here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
PURE=(hydra-core omegaconf higher pydantic annotated-types typing-inspection typing_extensions mnist1d hydra-joblib-launcher)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
specs=()
for name in "${PURE[@]}" pydantic_core; do
  v=$(version "$name" 2>/dev/null) && specs+=("$name==$v") || specs+=("$name")
done
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl "${specs[@]}"
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls .whl
du -sh .whl
