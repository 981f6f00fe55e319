#!/usr/bin/env bash
# Install the peer force fields (MACE, TorchMD-NET, NequIP) into .venv-peers/ at the repo root.
#
#     bash benchmarks/peers/install.sh
#     TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" \
#         bash benchmarks/peers/install.sh          # a CUDA build instead of the CPU one
#
# The peers live in their own environment, never in .venv/ and never in the package's
# dependencies: mace-torch pins e3nn==0.4.4, while freecg_md needs e3nn>=0.5.1 and current
# NequIP needs e3nn>=0.6 (see constraints.txt beside this file for what resolves together).
# benchmarks/peers.py runs FreeCG with .venv/bin/python and each peer with
# .venv-peers/bin/python, one process per measurement, so the two e3nn versions never meet.
#
# Environment variables:
#   PYTHON      interpreter that creates the venv (default: python3)
#   VENV        where to put it (default: <repo>/.venv-peers)
#   TORCH_SPEC  pip arguments for torch, installed first so that nothing below pulls another
#               build (default: torch==2.13.0, the CPU wheel; an unpinned torch would fetch a
#               multi-GB CUDA build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$repo/.venv-peers}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)

echo "== torch: $TORCH_SPEC"
# shellcheck disable=SC2086  # TORCH_SPEC may carry several pip arguments on purpose
"${pip[@]}" $TORCH_SPEC
torch_version="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"

echo "== peers (torch kept at $torch_version)"
# Pinning torch to the version just installed stops the resolver from swapping the build.
"${pip[@]}" -c "$here/constraints.txt" "torch==$torch_version" -r "$here/requirements.txt"

echo "== check"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md

for name in ("torch", "e3nn", "mace-torch", "torchmd-net", "nequip", "warp-lang",
             "torch-geometric", "lightning", "numpy", "ase"):
    try:
        print(f"{name:16} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:16} MISSING")
import mace.modules, nequip, torchmdnet.models.model  # noqa: E401,F401  (imports work)
print("imports ok")
PY
echo "peers installed in $VENV; run: .venv/bin/python benchmarks/peers.py --quick"
