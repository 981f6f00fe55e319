#!/usr/bin/env bash
# FreeCG on a CUDA GPU, in one go (a few minutes): correctness against CPU float64, one
# calculator call, MD throughput for 1, 8, 32 and 64 replicas in one pass, torch.compile on
# and off, peak memory; one table in OUT/gpu_check.md (benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh [OUT]                 # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --download-wheels     # beforehand, where pip reaches PyPI
#
# It uses the machine's own python3 and torch (a CUDA build) and the repository as it is (no
# install, no C++ build). What such a machine usually lacks (ase, vesin, mdtraj) comes from
# wheels in .whl/ when that folder exists (for a machine without network: download them
# first with --download-wheels, for Python 3.12), otherwise from pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(ase==3.29.0 vesin==0.6.2 mdtraj==1.11.1.post2)

if [ "${1:-}" = "--download-wheels" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${PACKAGES[@]}"
  exit 0
fi

OUT=${1:-${OUT:-gpu_check}}
SITE=${TMPDIR:-/tmp}/freecg_gpu_site
if ! python3 -c "import ase, vesin, mdtraj" 2>/dev/null; then
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl
  else
    python3 -m pip install -q --no-deps --target "$SITE" "${PACKAGES[@]}"
  fi
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# The CPU reference in float64 runs the torch operations of the reference model, not the
# fused CPU kernels (which would need a C++ build first).
export FREECG_MD_KERNELS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
exec python3 benchmarks/gpu_check.py --out "$OUT"
