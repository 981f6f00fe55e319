"""Fused C++ kernels for a layer's per-edge work and group CG transform on a CPU.

Four pieces of a FreeCG layer (:mod:`freecg_md.nn.layer`) are built from per-edge tensors
and reduced at once: the attention messages and their sums on the centres, the enhancer's
invariants with the edge update's rejected dot product, and the abstract edges. With torch
operations every (E, 8, F) and (E, F) intermediate goes through memory, forward and
backward, as dozens of small operations per run of edges, and that is most of a layer's
time on a CPU. ``csrc/kernels.cpp`` computes each piece edge by edge from the neighbours'
rows where they lie (one row per atom, read at the edges' neighbour indices), without
those intermediates. It also computes the group CG transform with the shuffle on blocks of
atoms, one atom per vector lane and a group's weights held in cache, instead of through
(G, N, d3, T^2) channel-pair tensors and batched products of T = 8 columns. The linear
maps stay torch's (``mm``). The kernels compute the model's default choices
(:data:`~freecg_md.nn.plan.KERNEL_CHOICES`).

A frozen model's pass calls the kernels through :mod:`~freecg_md.nn.cpu.fused_run`, with
the backward pass of a whole run written out. The autograd functions here wrap each kernel
on its own (:func:`edge_messages`, :func:`edge_invariants`, :func:`aggregate_vectors`,
:func:`group_cg_shuffled`), for composing them with autograd; their backward pass is not
differentiable again. Each is tested equal to the reference's torch operations, values and
gradients.

The kernels are compiled on first use with :func:`torch.utils.cpp_extension.load` (needs a
C++ compiler and ninja; under a minute, once; cached under ``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``). Where that fails the model runs on torch
operations, with a warning; ``FREECG_MD_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..group_cg import PATHS, GroupCGTensorProduct, shuffle_abstract_edges

logger = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
# -march=native: the kernels are compiled on the machine that runs them.
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd"]
# Group sizes T the group CG kernel is compiled for; others use torch operations.
FUSED_GROUP_SIZES = (4, 8, 16)
_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType | None] = {}


def _build_name() -> str:
    """An extension name unique to the source, flags and CPU, so a cache shared by
    machines of different CPUs (a home directory on a cluster) never loads a binary built
    for another instruction set."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode())
    try:
        flags = [line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(("flags", "model name", "Features", "CPU part"))][:2]
        digest.update("\n".join(flags).encode())
    except OSError:
        pass
    return f"freecg_kernels_{digest.hexdigest()[:12]}"


def load_kernels() -> ModuleType | None:
    """The compiled kernels, compiling them on first use; None if they are turned off
    (``FREECG_MD_KERNELS=0``) or cannot be built (a warning says why)."""
    if os.environ.get("FREECG_MD_KERNELS", "1") == "0":
        return None
    if "module" in _LOADED:  # every kernel call asks: no lock once loaded
        return _LOADED["module"]
    with _LOCK:
        if "module" not in _LOADED:
            _LOADED["module"] = _build()
        return _LOADED["module"]


def _build() -> ModuleType | None:
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    name = _build_name()
    logger.info("loading FreeCG's CPU edge kernels (%s); the first use compiles them", name)
    try:
        return cpp_extension.load(name, [str(SOURCE)], extra_cflags=CFLAGS, verbose=False)
    except Exception as error:  # noqa: BLE001 - any build failure means: use torch ops
        warnings.warn(
            f"FreeCG's fused CPU edge kernels could not be built ({type(error).__name__}: "
            f"{error}); using torch operations instead, which are slower on a CPU. They "
            "need a C++ compiler and the ninja package; FREECG_MD_KERNELS=0 silences this.",
            RuntimeWarning, stacklevel=3)
        return None


def _put_ninja_on_path() -> None:
    # The ninja package puts its binary beside the interpreter's scripts, which is not on
    # PATH when a venv's python is run without activating the venv; torch looks on PATH.
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def kernels_available() -> bool:
    """Whether the fused CPU kernels can be used (building them if need be)."""
    return load_kernels() is not None


def _fused(tensor: torch.Tensor) -> bool:
    return (tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64)
            and kernels_available())


# The kernels' bias argument where there is none (their inputs are already through SiLU).
_NO_BIAS = torch.empty(0)


class _Invariants(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, w_center: torch.Tensor, w_rows: torch.Tensor,
                sh: torch.Tensor, centers: torch.Tensor,
                neighbors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dot, rejected = load_kernels().invariants_forward(v, w_center, w_rows, sh, centers,
                                                          neighbors)
        ctx.save_for_backward(v, w_center, w_rows, sh, centers, neighbors)
        return dot, rejected

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_dot: torch.Tensor | None,
                 grad_rejected: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        v, w_center, w_rows, sh, centers, neighbors = ctx.saved_tensors
        edge_update = w_center.numel() > 0
        if grad_dot is None:
            grad_dot = v.new_zeros(sh.shape[0], v.shape[2])
        if not edge_update:
            grad_rejected = v.new_empty(0, v.shape[2])
        elif grad_rejected is None:
            grad_rejected = torch.zeros_like(grad_dot)
        grad_v, grad_wc, grad_wn, grad_sh = load_kernels().invariants_backward(
            v, w_center, w_rows, sh, centers, neighbors, torch.argsort(neighbors, stable=True),
            grad_dot.contiguous(), grad_rejected.contiguous(), torch.zeros_like(v),
            torch.zeros_like(w_rows))
        if not edge_update:
            grad_wc = grad_wn = None
        return grad_v, grad_wc, grad_wn, grad_sh, None, None


class _Aggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, gates: torch.Tensor, sh: torch.Tensor,
                phi: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor,
                n_centers: int) -> torch.Tensor:
        ctx.save_for_backward(v, gates, sh, phi, centers, neighbors)
        return load_kernels().aggregate_forward(v, gates, _NO_BIAS, sh, phi, centers,
                                                neighbors, n_centers, True)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, gates, sh, phi, centers, neighbors = ctx.saved_tensors
        grad_v, grad_gates, grad_sh, grad_phi = load_kernels().aggregate_backward(
            v, gates, _NO_BIAS, sh, phi, centers, neighbors, grad_out.contiguous(), True,
            torch.zeros_like(v))
        return grad_v, grad_gates, grad_sh, grad_phi, None, None, None


class _Messages(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, s: torch.Tensor,
                dkdv: torch.Tensor, enhance: torch.Tensor, phi: torch.Tensor,
                centers: torch.Tensor, neighbors: torch.Tensor,
                n_centers: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(q, k, s, dkdv, enhance, phi, centers, neighbors)
        return tuple(load_kernels().message_forward(q, k, s, dkdv, _NO_BIAS, enhance, phi,
                                                    centers, neighbors, n_centers, True))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_message: torch.Tensor | None,
                 grad_summed: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        q, k, s, dkdv, enhance, phi, centers, neighbors = ctx.saved_tensors
        width = q.shape[1] * q.shape[2]
        if grad_message is None:
            grad_message = q.new_zeros(centers.shape[0], width)
        if grad_summed is None:
            grad_summed = q.new_zeros(q.shape[0], width)
        grads = load_kernels().message_backward(q, k, s, dkdv, _NO_BIAS, enhance, phi,
                                                centers, neighbors, grad_message.contiguous(),
                                                grad_summed.contiguous(), True,
                                                torch.empty_like(dkdv), torch.zeros_like(k),
                                                torch.zeros_like(s))
        return (*grads, None, None, None)


def _require_kernels() -> ModuleType:
    module = load_kernels()
    if module is None:
        raise RuntimeError("the fused CPU kernels are not available (turned off with "
                           "FREECG_MD_KERNELS=0, or they could not be built)")
    return module


def edge_messages(
    q: torch.Tensor, k: torch.Tensor, s: torch.Tensor, dkdv: torch.Tensor,
    enhance: torch.Tensor, phi: torch.Tensor, centers: torch.Tensor,
    neighbors: torch.Tensor, n_centers: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention messages of each edge and their sums on the centres (no softmax):
    ``z_ij = enhance_ij + sum_d q_i k_j dk_ij`` per head, ``m_ij = s_j dv_ij silu(z_ij)
    phi_ij``.

    Parameters
    ----------
    q:
        (C, H, D) the centres' queries, indexed by ``centers``.
    k, s:
        (U, H, D) keys and values of the neighbours' rows, indexed by ``neighbors``.
    dkdv:
        (E, 2F) the edge gates ``[dk, dv]``, after their SiLU (F = H D).
    enhance:
        (E, H) the attention enhancer's bias per head.
    phi:
        (E,) the cosine cutoff.

    Returns
    -------
    message, summed:
        (E, F) and (C, F).
    """
    _require_kernels()
    return _Messages.apply(q.contiguous(), k.contiguous(), s.contiguous(), dkdv.contiguous(),
                           enhance.contiguous(), phi.contiguous(), centers.contiguous(),
                           neighbors.contiguous(), n_centers)


def edge_invariants(
    v: torch.Tensor, w_center: torch.Tensor | None, w_rows: torch.Tensor | None,
    sh: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The enhancer's invariants ``sum_m v_j[m] Y[m]`` (E, F) and the edge update's
    rejected dot product (E, F), None without edge update
    (:func:`~freecg_md.nn.layer.edge_update_invariant`, ``"rejection"``).

    ``v`` (U, 8, F) and ``w_rows`` (U, 8, F, ``W_n v_j``) rows indexed by ``neighbors``;
    ``w_center`` (C, 8, F) ``W_c v_i`` indexed by ``centers``, None without edge update;
    ``sh`` (E, 8).
    """
    _require_kernels()
    empty = v.new_empty(0, 8, v.shape[2])
    dot, rejected = _Invariants.apply(
        v.contiguous(), empty if w_center is None else w_center.contiguous(),
        empty if w_rows is None else w_rows.contiguous(), sh.contiguous(),
        centers.contiguous(), neighbors.contiguous())
    return dot, (None if w_center is None else rejected)


def aggregate_vectors(v: torch.Tensor, gates: torch.Tensor, sh: torch.Tensor,
                      phi: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor,
                      n_centers: int) -> torch.Tensor:
    """Abstract edges ``A_i = sum_j (v_j * g1_ij + g2_ij (outer) Y_ij) phi_ij``, (C, 8, F).

    ``gates`` (E, 2F) is ``[g1, g2]``, ``phi`` (E,) the cosine cutoff; other arguments as in
    :func:`edge_invariants`.
    """
    _require_kernels()
    return _Aggregate.apply(v.contiguous(), gates.contiguous(), sh.contiguous(),
                            phi.contiguous(), centers.contiguous(), neighbors.contiguous(),
                            n_centers)


class _GroupCG(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor,
                cg: list[torch.Tensor], norms: tuple[float, float],
                shift: int) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.weight, ctx.cg, ctx.norms, ctx.shift = weight, cg, norms, shift
        return load_kernels().group_cg_forward(a, b, weight, cg, *norms, shift)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b = ctx.saved_tensors
        grad_a, grad_b = load_kernels().group_cg_backward(
            a, b, ctx.weight, ctx.cg, *ctx.norms, ctx.shift, grad_out.contiguous())
        return grad_a, grad_b, None, None, None, None


def group_cg_kernel_inputs(
    transform: GroupCGTensorProduct,
) -> tuple[torch.Tensor, list[torch.Tensor], tuple[float, float]]:
    """``transform`` as the group CG kernel takes it: the weights (G, 4, T, T, T), detached
    and contiguous, the Wigner 3j blocks of the four paths in float64, and the output norms
    of l = 1 and l = 2."""
    cg = [getattr(transform, f"w3j_{l1}{l2}{l3}").double().contiguous() for l1, l2, l3 in PATHS]
    return transform.weight.detach().contiguous(), cg, (transform.norm[1], transform.norm[2])


def group_cg_shuffled(transform: GroupCGTensorProduct, a: torch.Tensor, b: torch.Tensor,
                      shift: int) -> torch.Tensor:
    """``shuffle_abstract_edges(transform(a, b), shift)``, (N, 8, F), by the fused kernel
    (frozen weights: no gradient reaches them); group sizes the kernel is not compiled for
    (:data:`FUSED_GROUP_SIZES`) use torch operations."""
    if transform.group_size in FUSED_GROUP_SIZES and _fused(a):
        return _GroupCG.apply(a.contiguous(), b.contiguous(),
                              *group_cg_kernel_inputs(transform), shift)
    return shuffle_abstract_edges(transform(a, b), shift)
