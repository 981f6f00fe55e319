"""FreeCG on a CPU, faster: the same function as the reference (:mod:`freecg_md.nn.layer`)
for frozen models, laid out for a CPU's cores and caches.

- :mod:`~freecg_md.nn.cpu.kernels`: fused C++ kernels for a layer's per-edge work and
  group CG transform (``csrc/kernels.cpp``, compiled on first use);
- :mod:`~freecg_md.nn.cpu.fused_run`: one run of edges through the kernels, its backward
  pass written out;
- :mod:`~freecg_md.nn.cpu.layer_runs`: a layer's runs shared among threads, fused or on
  torch operations (:func:`layer_in_runs`);
- :mod:`~freecg_md.nn.cpu.embedding_runs`: the embeddings the same way;
- :mod:`~freecg_md.nn.cpu.threads`: the thread pool, per-thread sums and blocks of atoms.

The reference never imports this package; :func:`freecg_md.nn.plan.plan_pass` decides when
a pass takes it, and every path is tested equal to the reference (tests/nn/test_backends.py).
A GPU backend would sit beside it as another package chosen by the plan.
"""

from .kernels import kernels_available, load_kernels
from .layer_runs import RunsInParallel, layer_in_runs
from .threads import AtomsInBlocks, SerialPool, ThreadRunPool, atom_blocks, run_pool

__all__ = ["AtomsInBlocks", "RunsInParallel", "SerialPool", "ThreadRunPool", "atom_blocks",
           "kernels_available", "layer_in_runs", "load_kernels", "run_pool"]
