"""Reduced-precision matrix products: an opt-in inference mode, off by default.

``FreeCG.matmul_precision`` chooses how the float32 matrix products of a pass are computed:

- ``"float32"`` (the default): IEEE float32 throughout.
- ``"bfloat16"`` (CPUs with bfloat16 units, e.g. AMX or AVX512-BF16): the products inside
  the interaction layers' runs of edges (the edge projections and each run's output
  projection), forward and backward, take bfloat16 operands and accumulate and return
  float32 (oneDNN's "fpmath" mode, through ``torch.backends.mkldnn.matmul.fp32_precision``).
  Everything else stays float32: the per-atom projections before the runs (small, and the
  largest share of the error in bfloat16), the embedding, the radial functions, the
  read-out, the fused kernels and every sum over neighbours. Only the frozen CPU path (the
  fused kernels) has it.
- ``"tf32"`` (CUDA GPUs): every float32 product of the pass and its backward in TF32
  (``torch.backends.cuda.matmul.fp32_precision``).

The operands' rounding is the mode's whole cost: bfloat16 keeps 8 significant bits, TF32
11, float32 24. A product ``y = x W`` of width ``K`` then carries a relative error of about
``2**-8`` per term, random in sign over the terms, so forces move by a small fraction of the
model's own error (benchmarks/bench_precision.py measures it against float32, with its
speed). The weights' rounding is the same in every call, so energies shift by a nearly
constant amount per atom: energy differences between conformations of one molecule, and
the forces, barely move; absolute energies compared across compositions do.

The backend settings are process-wide; :func:`matmul_precision` sets them for the span of a
block and restores the caller's (on a CPU each phase of a layer's runs, on CUDA a whole
pass), so other threads of the process that run products at the same time share the mode
for that span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["MATMUL_PRECISIONS", "check_matmul_precision", "cpu_has_bfloat16",
           "matmul_precision"]

MATMUL_PRECISIONS = ("float32", "bfloat16", "tf32")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16): without
    either, oneDNN emulates bfloat16 and the mode would be slower than float32."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


def check_matmul_precision(precision: object, device: torch.device | str,
                           fused_cpu: bool = True) -> str:
    """``precision`` if a pass on ``device`` can use it, else ValueError saying why.

    ``fused_cpu`` tells whether the pass runs through the fused CPU kernels (the only CPU
    path with the bfloat16 mode).
    """
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision={precision!r}: expected one of "
                         f"{', '.join(map(repr, MATMUL_PRECISIONS))}")
    kind = torch.device(device).type
    if precision == "bfloat16":
        if kind != "cpu":
            raise ValueError(f"matmul_precision='bfloat16' is a CPU mode; on {kind} use "
                             "'tf32' (CUDA) or 'float32'")
        if not fused_cpu:
            raise ValueError("matmul_precision='bfloat16' needs the frozen model's fused CPU "
                             "path (requires_grad_(False), fused_kernels=True, the kernels' "
                             "layer choices); this pass runs on torch operations")
        if not torch.backends.mkldnn.is_available() or not cpu_has_bfloat16():
            raise ValueError("matmul_precision='bfloat16' needs oneDNN and a CPU with "
                             "bfloat16 units (AMX or AVX512-BF16); this one has neither, "
                             "and emulated bfloat16 is slower than float32")
    if precision == "tf32" and kind != "cuda":
        raise ValueError(f"matmul_precision='tf32' is a CUDA mode; on {kind} use "
                         "'bfloat16' (CPUs with bfloat16 units) or 'float32'")
    return precision


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Within the block, float32 products on ``device`` follow ``precision``
    (:data:`MATMUL_PRECISIONS`; ``"float32"`` changes nothing); the previous settings come
    back on exit, also after an error."""
    kind = torch.device(device).type
    if precision == "float32":
        yield
        return
    if (kind, precision) not in (("cpu", "bfloat16"), ("cuda", "tf32")):
        check_matmul_precision(precision, device)  # raises, saying why
    backend = torch.backends.mkldnn.matmul if kind == "cpu" else torch.backends.cuda.matmul
    previous = backend.fp32_precision
    backend.fp32_precision = "bf16" if precision == "bfloat16" else "tf32"
    try:
        yield
    finally:
        backend.fp32_precision = previous
