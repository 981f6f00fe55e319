"""The FreeCG model: configuration and the energy/forces module."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from e3nn import o3
from torch import nn

from .chunks import (
    EdgeChunk,
    EdgeRun,
    edge_chunks,
    for_kernels,
    group_chunks,
    is_sorted,
    merge_chunks,
    run_chunk,
    split_runs,
)
from .cpu import AtomsInBlocks, atom_blocks, layer_in_runs, run_pool
from .cpu.embedding_runs import embed_in_runs
from .cpu.threads import RunPool, calling_thread_alone
from .embedding import EdgeEmbedding, NeighborEmbedding
from .head import EnergyHead
from .layer import EDGE_UPDATE_FORMS, ENHANCER_FORMS, FreeCGLayer
from .plan import MAX_EDGE_RUNS, ExecutionPlan, plan_pass, takes_fused_kernels
from .precision import matmul_precision
from .radial import CosineCutoff, ExpNormalBasis
from .spatial_order import spatial_order

# Elements of proteins and most organic molecules: H, C, N, O, S.
DEFAULT_SPECIES = (1, 6, 7, 8, 16)
_FLOAT64_BUFFERS = ("atomic_energies", "energy_scale", "energy_shift")
# The allowed values of the config's string choices (FreeCGConfig's docstring says what
# each does).
CHOICES: dict[str, tuple[str, ...]] = {
    "edge_update": EDGE_UPDATE_FORMS,
    "enhancer": ENHANCER_FORMS,
    "init": ("xavier", "reference"),
}
# What every model file written before these options existed computes (their values
# then), so that such files, and model fingerprints, keep their meaning.
LEGACY_CHOICES: dict[str, Any] = {
    "self_loops": False,
    "vector_message_cutoff": True,
    "edge_update": "rejection",
    "enhancer": "linear",
    "init": "xavier",
    "head_norm_epsilon": 1e-8,
}
# Config fields that change how a model is trained, not the function it computes.
TRAINING_ONLY = frozenset({"init"})
# The authors' released code's choice for each option where ours differs.
REFERENCE_CHOICES: dict[str, Any] = {
    "self_loops": True,
    "vector_message_cutoff": False,
    "edge_update": "dot",
    "enhancer": "linear",
    "init": "reference",
    "head_norm_epsilon": 0.0,
}


@dataclass(frozen=True)
class FreeCGConfig:
    """Hyperparameters of a FreeCG model; JSON-serialisable.

    The defaults are a small model for MD on a CPU (F = 128, 4 layers, G = 16, T = 8).
    The paper's rMD17 size is ``hidden=256, num_layers=9, num_groups=32``.

    Attributes
    ----------
    species:
        Atomic numbers the model knows, in embedding order.
    hidden:
        ``F``, channels of node, edge and vector features (number of abstract edges).
    num_layers:
        Interaction layers.
    num_heads:
        ``H``, attention heads.
    num_groups:
        ``G``, groups of the group CG transform (``T = hidden / num_groups``).
    num_basis:
        ``K``, radial basis functions.
    cutoff:
        ``r_c`` in Å.
    use_group_cg:
        False gives the ViSNet-style ablation without the group CG branch.
    self_loops:
        Whether each atom is its own neighbour in the interaction layers (an edge of length
        0 with ``Y = 0`` and ``phi = 1``: a scalar message to itself, its own gated vectors
        and a self edge feature), as in the authors' code. The neighbour embedding never
        sees them.
    vector_message_cutoff:
        Whether the vector message ``M_ij`` is multiplied by the cutoff ``phi(d_ij)``.
        Without it (the authors' code) the gates' biases make the energy jump where an
        atom crosses the cutoff.
    edge_update:
        ``"rejection"``: the edge update's invariant ``a.b - (a.Y)(b.Y)/|Y|^2`` of
        ``a = W_c v_i`` and ``b = W_n v_j`` made orthogonal to ``Y_ij``; ``"dot"``: the plain
        ``a.b``, which is what the authors' rejection reduces to, since their l = 1, 2
        harmonics have ``|Y|^2 = 2``.
    enhancer:
        ``"linear"``: the attention enhancer maps the F invariants ``<v_j[:, c], Y_ij>`` to H
        biases with one linear layer (the authors' code); ``"max"``: it first takes their
        maximum over each group's T abstract edges, then maps the G maxima to H biases (our
        reading of the paper's equation, which takes a maximum over abstract edges).
    init:
        ``"reference"`` (the default): the authors' scales (each of q, k, s and dk, dv
        initialised as its own F x F Xavier-uniform matrix, group-CG weights uniform in
        ``+-sqrt(6 / ((G + 1) 4 T^3))``, the embeddings' linear maps Xavier-uniform with zero
        bias); ``"xavier"``: merged projections Xavier-uniform as one matrix, group-CG
        weights uniform in ``+-sqrt(6 / (T^2 + T))``, the embeddings' linear maps torch's
        default (the shipped models were trained from this). Training only: a file's
        weights are what they are.
    head_norm_epsilon:
        Added under the square root of the head's vector norms so that their gradient stays
        finite where an atom's vector features vanish; 0 in the authors' code.

    :meth:`reference` gives the settings that compute the authors' forward pass.
    """

    species: tuple[int, ...] = DEFAULT_SPECIES
    hidden: int = 128
    num_layers: int = 4
    num_heads: int = 8
    num_groups: int = 16
    num_basis: int = 32
    cutoff: float = 5.0
    use_group_cg: bool = True
    self_loops: bool = False
    vector_message_cutoff: bool = True
    edge_update: str = "rejection"
    enhancer: str = "linear"
    init: str = "reference"
    head_norm_epsilon: float = 1e-8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        species = self.species
        if not species or len(set(species)) != len(species) or min(species) < 1:
            raise ValueError(f"species={species!r}: expected distinct atomic numbers >= 1")
        for name in ("hidden", "num_layers", "num_heads", "num_groups", "num_basis"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a positive integer")
        if self.hidden % self.num_heads or self.hidden % self.num_groups:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by num_heads={self.num_heads} "
                f"and by num_groups={self.num_groups}"
            )
        if self.hidden % 2:
            raise ValueError(f"hidden={self.hidden}: expected an even number (head halves it)")
        if not self.cutoff > 0:
            raise ValueError(f"cutoff={self.cutoff!r}: expected a positive distance in Å")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")
        if not self.head_norm_epsilon >= 0:
            raise ValueError(f"head_norm_epsilon={self.head_norm_epsilon!r}: expected >= 0")

    @classmethod
    def reference(cls, **overrides: Any) -> FreeCGConfig:
        """The settings with which the forward pass is the authors' released code's:
        self loops in the interaction layers, no cutoff on the vector message, the plain
        dot product in the edge update, the linear enhancer, their initial scales and no
        epsilon in the head's norms. ``overrides`` set any other field (``hidden=256``,
        ``num_layers=9``, ``num_groups=32`` is their rMD17 size). Their neighbour cap of
        32 per atom is not reproduced: no neighbour is ever dropped."""
        return cls(**{**REFERENCE_CHOICES, **overrides})

    @property
    def is_reference(self) -> bool:
        """Whether every choice in :data:`REFERENCE_CHOICES` is the authors'."""
        return all(getattr(self, name) == value for name, value in REFERENCE_CHOICES.items())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["species"] = list(self.species)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreeCGConfig:
        """A config from given fields (a training config's ``model``); the rest default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown FreeCG config keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> FreeCGConfig:
        """The config a model file recorded. A choice the file lacks takes its value in
        :data:`LEGACY_CHOICES`, what files written before the choice existed computed, so
        that a change of default never changes what an older file means."""
        return cls.from_dict({**LEGACY_CHOICES, **data})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class FreeCG(nn.Module):
    """FreeCG: a Clebsch-Gordan transformer on abstract edges (Shao et al., ICLR 2025).

    Parameters
    ----------
    config:
        A :class:`FreeCGConfig`; keyword arguments override its fields, so ``FreeCG()`` is
        the small default and ``FreeCG(hidden=256, num_layers=9, num_groups=32)`` the
        paper's size.

    Notes
    -----
    Units: positions in Å, energies in eV, forces in eV/Å. By default the graph excludes
    self loops, which the authors' code keeps in its interaction layers; the config's
    choices (``self_loops`` and others) select either, and :meth:`reference` builds the
    authors' forward pass (docs/guide/model.md lists each difference). The total
    energy is ``E = sum_i (E0[z_i] + shift + scale * e_i)`` with per-element reference
    energies ``E0``, a per-atom ``shift`` and a ``scale`` fitted to the training set; ``e_i``
    is the network's output. Works in float32 and float64 (``model.double()``); it never
    changes torch's global default dtype.

    Frozen models on a CPU (the calculator's and the MD potentials' copies) run the
    per-edge vector work and the group CG transform through fused C++ kernels
    (:mod:`~freecg_md.nn.cpu.kernels`, compiled on first use; ``fused_kernels = False`` turns
    them off for this model, ``FREECG_MD_KERNELS=0`` everywhere), with the same energies
    and forces to rounding; training uses torch operations.

    Large inputs are evaluated in runs of whole centre atoms (:mod:`freecg_md.nn.chunks`):
    each layer's edge work goes run by run, so no (E, 8, F) tensor is made whole.
    Energies and forces are the same to rounding. ``edge_chunk_size`` (an attribute, not
    saved with the model) sets their size: ``"auto"`` (the default) lets
    :func:`~freecg_md.nn.plan.plan_pass` choose (through the fused CPU kernels, one run per
    thread where each thread gets at least 1,024 edges, and runs of at most 8,192 edges;
    on torch operations, runs of about 1,024 edges above 4,096 edges, on a GPU above
    1,000,000); an integer asks for runs of about that many edges above four times that
    many; None turns runs off. When no
    parameter needs a gradient (the calculator and the MD potentials hold frozen copies),
    the runs are shared among ``torch.get_num_threads()`` threads (on a CPU) and their
    neighbour gradients summed per thread (:mod:`freecg_md.nn.cpu`), as is the per-atom
    work between them (layer norms, projections, read-out) in blocks of about 512 atoms
    (:func:`~freecg_md.nn.cpu.threads.atom_blocks`; a smaller system with wide features in
    one block per thread), while the calling thread's own operations run on one intra-op
    thread (:func:`~freecg_md.nn.cpu.threads.calling_thread_alone`), their graphs kept
    from the forward pass up to 65,536 edges x 128 channels x 4 layers
    (:func:`~freecg_md.nn.chunks.keeps_graphs`); otherwise (training) each run is
    checkpointed, at most 64 runs per pass. On a CPU, from ``SPATIAL_ORDER_MIN_ATOMS``
    (2,048) atoms, the network takes the atoms in a space-filling-curve order
    (:mod:`~freecg_md.nn.spatial_order`), so that a run's neighbours lie near each other
    in memory whatever the input's order. See benchmarks/README.md for the measured
    effect: 8 chignolins in one pass, and periodic water up to 52,728 atoms.
    """

    def __init__(self, config: FreeCGConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self._compiled_network = None
        self.edge_chunk_size: int | str | None = "auto"
        self.fused_kernels = True
        # Reduced-precision products (freecg_md/nn/precision.py): "float32", "bfloat16"
        # (frozen, CPU) or "tf32" (CUDA). Like edge_chunk_size, not saved with the model.
        self.matmul_precision = "float32"
        # The execution path of the latest pass (freecg_md/nn/plan.py), for the user to see.
        self.last_plan: ExecutionPlan | None = None
        config = config or FreeCGConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        num_species = len(config.species)
        lookup = torch.full((max(config.species) + 1,), -1, dtype=torch.long)
        lookup[list(config.species)] = torch.arange(num_species)
        self.register_buffer("species_index", lookup)
        self.register_buffer("atomic_energies", torch.zeros(num_species, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("energy_shift", torch.tensor(0.0, dtype=torch.float64))

        self.cutoff = config.cutoff
        self.cutoff_fn = CosineCutoff(config.cutoff)
        self.rbf = ExpNormalBasis(config.cutoff, config.num_basis)
        self.sh_irreps = o3.Irreps("1o + 2e")
        self.neighbor_embedding = NeighborEmbedding(num_species, config.hidden, config.num_basis)
        self.edge_embedding = EdgeEmbedding(config.num_basis, config.hidden)
        self.layers = nn.ModuleList(
            [
                FreeCGLayer(
                    config.hidden,
                    config.num_heads,
                    config.num_groups,
                    update_edges=index < config.num_layers - 1,
                    use_group_cg=config.use_group_cg,
                    zero_vectors_in=index == 0,
                    vector_message_cutoff=config.vector_message_cutoff,
                    edge_update=config.edge_update,
                    enhancer=config.enhancer,
                )
                for index in range(config.num_layers)
            ]
        )
        self.out_norm = nn.LayerNorm(config.hidden)
        self.head = EnergyHead(config.hidden, config.head_norm_epsilon)
        if config.init == "reference":
            reference_initialisation(self)

    @classmethod
    def reference(cls, **overrides: Any) -> FreeCG:
        """A model whose forward pass is the authors' released code's
        (:meth:`FreeCGConfig.reference`; ``overrides`` set other fields)."""
        return cls(FreeCGConfig.reference(**overrides))

    @property
    def species(self) -> tuple[int, ...]:
        return self.config.species

    def set_energy_standardisation(
        self, atomic_energies: dict[int, float], scale: float, shift: float
    ) -> None:
        """Set ``E0`` (eV per element, by atomic number), ``scale`` (eV) and ``shift``
        (eV per atom). Elements missing from ``atomic_energies`` get 0."""
        unknown = sorted(set(atomic_energies) - set(self.species))
        if unknown:
            raise ValueError(f"atomic_energies has elements {unknown} the model does not know")
        values = [float(atomic_energies.get(z, 0.0)) for z in self.species]
        with torch.no_grad():
            self.atomic_energies.copy_(torch.tensor(values, dtype=torch.float64))
            self.energy_scale.fill_(float(scale))
            self.energy_shift.fill_(float(shift))

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        # Keep the energy standardisation in float64 whatever dtype the network runs in (a
        # float32 round trip would lose digits of the large per-element reference
        # energies); only follow the device.
        saved = {name: getattr(self, name) for name in _FLOAT64_BUFFERS}
        module = super()._apply(fn, recurse)
        for name, original in saved.items():
            setattr(self, name, original.to(device=getattr(self, name).device))
        return module

    def atom_energies(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor | None = None,
        create_graph: bool = False,
        batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Energy of each atom, (N,) eV, in float64.

        Parameters
        ----------
        numbers:
            (N,) atomic numbers (long).
        positions:
            (N, 3) Å, in the model's dtype.
        edge_index:
            (2, E) long: row 0 the centre atom ``i``, row 1 the neighbour ``j``. Pairs at or
            beyond the cutoff are allowed (a Verlet list built with a skin) and ignored.
        shifts:
            (E, 3) Å, Cartesian image shift added to ``r_j - r_i`` for periodic cells.
        create_graph:
            Whether the forces will be differentiated again (a force loss, Hessian
            products): then the frozen-model paths, whose backward is differentiable only
            once (the threaded runs and the fused kernels), are not used.
        batch:
            (N,) long, each atom's molecule, or None for one system. Only the order of the
            work depends on it: from ``SPATIAL_ORDER_MIN_ATOMS`` atoms a CPU pass in runs
            takes the atoms in a space-filling-curve order, each molecule's atoms together.
        """
        centers, neighbors, vectors, distances = self.edges_within_cutoff(positions, edge_index,
                                                                          shifts)
        if self.config.self_loops:
            # Constant zero vectors, not r_i - r_i: the harmonics' gradient at 0 is huge,
            # and a self loop does not move with the atoms anyway. Y(0) = 0 for l = 1, 2.
            loops = torch.arange(numbers.shape[0], device=centers.device)
            centers, neighbors = torch.cat([centers, loops]), torch.cat([neighbors, loops])
            vectors = torch.cat([vectors, vectors.new_zeros(loops.shape[0], 3)])
            distances = torch.cat([distances, distances.new_zeros(loops.shape[0])])

        plan = plan_pass(self, positions.device, numbers.shape[0], centers.shape[0],
                         create_graph)
        self.last_plan = plan
        chunks = None
        rank = None  # atom i is atom rank[i] of the network's order, where that differs
        if plan.in_runs:
            if plan.spatial_order:
                # The network sees the atoms in Morton order; the gradients reach the
                # positions through the edge vectors, which do not depend on the labels.
                atom_order = spatial_order(positions.detach(), self.cutoff, batch)
                rank = torch.empty_like(atom_order)
                rank[atom_order] = torch.arange(atom_order.shape[0], device=rank.device)
                centers, neighbors = rank[centers], rank[neighbors]
            if not is_sorted(centers):
                order = torch.argsort(centers, stable=True)
                centers, neighbors = centers[order], neighbors[order]
                vectors = vectors.index_select(0, order)
                distances = distances.index_select(0, order)
            chunks = edge_chunks(centers, numbers.shape[0], plan.max_edges_per_run,
                                 plan.n_runs)

        species = self.species_index[numbers]
        sh = o3.spherical_harmonics(self.sh_irreps, vectors, normalize=True, normalization="norm")
        fused = plan.kernels == "fused-cpu"
        if chunks is None:
            network = self._compiled_network if plan.compiled else self._network
            # The fused kernels run through the CPU path (freecg_md.nn.cpu), here in one run.
            out = network(species, centers, neighbors, distances, sh,
                          pool=run_pool(1) if fused else None, fused=fused,
                          precision=plan.matmul_precision)
        else:
            pool = run_pool(plan.threads) if plan.frozen else None
            network_species = species if rank is None else species[atom_order]
            out = self._network(network_species, centers, neighbors, distances, sh, chunks,
                                pool, plan.keep_graphs, fused, plan.matmul_precision)
            if rank is not None:
                out = out.index_select(0, rank)
        return self.unstandardise(species, out)

    def unstandardise(self, species: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Atom energies (N,) eV, float64, from the network's standardised outputs ``out``
        (N,): ``E0[species] + shift + scale * out``; ``species`` (N,) indices into
        ``species``."""
        return (self.atomic_energies[species] + self.energy_shift
                + self.energy_scale * out.to(torch.float64))

    def edges_within_cutoff(self, positions: torch.Tensor, edge_index: torch.Tensor,
                            shifts: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(centers, neighbors, vectors, distances)`` of the listed pairs closer than the
        cutoff: ``vectors = r_neighbor - r_center + shift`` (E, 3) Å, differentiable by
        ``positions`` (N, 3) Å; ``edge_index`` (2, E) and ``shifts`` (E, 3) Å or None as
        for :meth:`atom_energies`. A neighbour list with a skin lists pairs beyond it."""
        centers, neighbors = edge_index[0], edge_index[1]
        # index_select, not advanced indexing: its backward is an index_add_, where
        # indexing's accumulating index_put_ took several ms per call on a chignolin.
        vectors = positions.index_select(0, neighbors) - positions.index_select(0, centers)
        if shifts is not None:
            vectors = vectors + shifts
        distances = torch.linalg.vector_norm(vectors, dim=-1)
        inside = distances < self.cutoff
        # One look at the device for both: every pair inside, and none of length zero.
        all_inside, none_zero = torch.stack([inside.all(), (distances > 0).all()]).tolist()
        if not none_zero and not bool(torch.isfinite(distances).all()):
            raise ValueError("positions (or shifts) give non-finite pair distances; expected "
                             "finite coordinates")
        if not none_zero:
            # A pair of length zero (an atom listed with itself unshifted, two atoms at one
            # place) has no direction: the reference layers would count it as a neighbour
            # at full weight and the fused kernels return NaN.
            zero = (distances == 0).nonzero().squeeze(1)[:5]
            pairs = torch.stack([centers[zero], neighbors[zero]], 1).tolist()
            raise ValueError(f"edge_index lists {int((distances == 0).sum())} pair(s) at zero "
                             f"distance, e.g. {pairs}: an atom with itself without a periodic "
                             "shift, or two atoms at one position; expected distinct atoms "
                             "(a neighbour list leaves i == j out)")
        if not all_inside:
            keep = inside.nonzero().squeeze(1)
            centers, neighbors = centers[keep], neighbors[keep]
            vectors, distances = vectors.index_select(0, keep), distances.index_select(0, keep)
        return centers, neighbors, vectors, distances

    def _network(self, species: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor,
                 distances: torch.Tensor, sh: torch.Tensor,
                 chunks: list[EdgeChunk] | None = None,
                 pool: RunPool | None = None, keep_graphs: bool = True,
                 fused: bool = False, precision: str = "float32") -> torch.Tensor:
        """The network from edges to standardised atom energies (N,), model dtype.

        ``species`` (N,) indices into ``species``; ``centers``, ``neighbors`` (E,) edges
        within the cutoff; ``distances`` (E,) Å; ``sh`` (E, 8) spherical harmonics;
        ``chunks`` runs of centre atoms to evaluate the edges in (edges sorted by centre),
        or None for all at once; ``pool`` threads to share the runs among, the frozen
        model's CPU path (:mod:`freecg_md.nn.cpu`), or None for the reference layers;
        ``keep_graphs`` whether the runs keep their graphs for the backward pass
        (:func:`~freecg_md.nn.chunks.keeps_graphs`); ``fused`` whether the runs are
        prepared for the fused CPU kernels (:mod:`~freecg_md.nn.cpu.kernels`; with a
        pool); ``precision`` the interaction layers' products on that path
        (:mod:`~freecg_md.nn.precision`). Kept free of e3nn objects so that torch.compile
        can trace it (:meth:`compile_network`).
        """
        phi = self.cutoff_fn(distances)
        n_atoms = species.shape[0]
        if chunks is None:
            runs = [EdgeRun(0, n_atoms, centers, neighbors, distances, sh, phi)]
        else:
            runs = split_runs(chunks, centers, neighbors, distances, sh, phi)
        if fused:
            runs = [for_kernels(run) for run in runs]
        if len(runs) > 1 and pool is not None and not self.config.self_loops:
            # A frozen model: the embedding's runs go to the pool's threads too.
            x, f = embed_in_runs(self.neighbor_embedding, self.edge_embedding, self.rbf,
                                 species, runs, pool, keep_graphs)
        elif len(runs) == 1 or keep_graphs:
            # The embedding's (E, F) tensors are small next to a layer's (E, 8, F) ones: at
            # this size they are computed whole, without a recomputation.
            rbf = self.rbf(distances)
            x = self.neighbor_embedding(species, centers, neighbors, rbf,
                                        self._neighbor_phi(distances, phi))
            f = self.edge_embedding(x, centers, neighbors, rbf)
            f = list(f.split([len(run.centers) for run in runs]))
        else:
            # The embedding in at most MAX_EDGE_RUNS checkpointed blocks of consecutive runs:
            # each block's backward writes a gradient of every atom's features (a cost of
            # blocks x atoms), and the per-block overhead runs in this thread. Block by run,
            # a 5,184-atom water box spent over half its call here.
            groups = group_chunks(chunks, MAX_EDGE_RUNS)
            blocks = split_runs([merge_chunks(group) for group in groups], centers, neighbors,
                                distances, sh, phi)
            summed = [run_chunk(self._neighbor_sum, species, block) for block in blocks]
            x = self.neighbor_embedding.combine_sum(species, torch.cat(summed))
            f = [part for block, group in zip(blocks, groups, strict=True)
                 for part in run_chunk(self._edge_features, x, block).split(
                     [chunk.edges.stop - chunk.edges.start for chunk in group])]
        v = x.new_zeros((x.shape[0], 8, x.shape[1]))
        for layer in self.layers:
            if pool is not None:  # a frozen model on a CPU: threads, fused kernels
                x, v, f_next = layer_in_runs(layer, x, v, f, runs, pool, keep_graphs,
                                             precision)
            else:  # the reference
                x, v, f_next = layer(x, v, f, runs)
            if f_next is not None:
                f = f_next
        if len(runs) > 1 and pool is not None:
            blocks = atom_blocks(n_atoms, pool.threads, device=x.device, width=x.shape[1])
            return AtomsInBlocks.apply(self._read_out, blocks, pool, x, v)
        return self._read_out(x, v)

    def _read_out(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Standardised atom energies (n,) from node features ``x`` (n, F), ``v`` (n, 8, F)."""
        return self.head(self.out_norm(x), v)

    def _neighbor_sum(self, species: torch.Tensor, run: EdgeRun) -> torch.Tensor:
        """The neighbour embedding's sum over a run's edges, (n_centers, F)."""
        return self.neighbor_embedding.neighbor_sum(
            species, run.centers, run.neighbors, self.rbf(run.distances),
            self._neighbor_phi(run.distances, run.phi), run.n_centers)

    def _neighbor_phi(self, distances: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The cutoff the neighbour embedding weights edges by: ``phi``, and 0 on self
        loops, which it never sees (length 0; no real pair has it)."""
        return phi * (distances > 0) if self.config.self_loops else phi

    def _edge_features(self, x: torch.Tensor, run: EdgeRun) -> torch.Tensor:
        """Initial edge features of a run's edges, (E_run, F)."""
        return self.edge_embedding(x, run.centers + run.first_atom, run.neighbors,
                                   self.rbf(run.distances))

    def compile_network(self, **options: Any) -> FreeCG:
        """Compile the network with ``torch.compile`` (dynamic shapes) for faster inference.

        Two things are compiled: the whole network, used where the edges are not cut into
        runs (a GPU below a million edges; a CPU where
        :func:`~freecg_md.nn.plan.plan_pass` plans one run), and
        each layer's update of one run of edges, used by the runs of a frozen model. On a
        CPU where the fused kernels load (:mod:`~freecg_md.nn.cpu.kernels`), frozen models use
        them instead and the compiled code stays unused: on chignolin (float32, 2 threads,
        ``benchmarks/bench_compile.py``) the kernels' eager calls took about half the time
        of the compiled torch operations (see benchmarks/README.md). So compile pays off
        on a GPU, or with ``fused_kernels = False``. The first call compiles (tens of
        seconds to minutes; needs a C++ compiler); later neighbour lists of other sizes
        reuse the compiled code. For inference only: the compiled backward does not
        support ``create_graph=True`` (training), and the runs use the compiled update
        only when no parameter needs a gradient. ``options`` go to ``torch.compile``.
        Returns the model.
        """
        self._compiled_network = torch.compile(self._network, dynamic=True, **options)
        for layer in self.layers:
            layer.compile_update(**options)
        return self

    def __getstate__(self) -> dict[str, Any]:
        # A compiled function cannot be copied or pickled; a copy runs eager until compiled.
        state = dict(self.__dict__)
        state["_compiled_network"] = None
        return state

    def _pass_settings(self, device: torch.device, create_graph: bool = False
                       ) -> contextlib.AbstractContextManager:
        """What a whole pass runs under (with the backward of :meth:`energy_and_forces`,
        which takes its forces inside it; a caller's own backward after :meth:`forward`
        runs outside). On a CUDA device, TF32 products where ``matmul_precision`` asks for
        them (on a CPU the bfloat16 mode is scoped to
        the interaction layers, :func:`~freecg_md.nn.cpu.layer_runs.layer_in_runs`). On a
        CPU, through the fused kernels, the calling thread's own operations on one
        intra-op thread while the pool's threads share the runs
        (:func:`~freecg_md.nn.cpu.threads.calling_thread_alone`)."""
        if device.type == "cuda" and self.matmul_precision != "float32":
            return matmul_precision(self.matmul_precision, device)
        return calling_thread_alone(takes_fused_kernels(self, device, create_graph))

    def forward(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        num_graphs: int = 1,
    ) -> torch.Tensor:
        """Total energy of each molecule in the batch, (B,) eV, float64.

        ``batch`` (N,) gives each atom's molecule index in ``[0, num_graphs)``; None means
        one molecule. Other arguments as in :meth:`atom_energies`.
        """
        with self._pass_settings(positions.device):
            energies = self.atom_energies(numbers, positions, edge_index, shifts, batch=batch)
        if batch is None:
            return energies.sum().reshape(1)
        return energies.new_zeros(num_graphs).index_add_(0, batch, energies)

    def energy_and_forces(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        num_graphs: int = 1,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies and forces ``F = -dE/dr``.

        Returns a dict with ``energy`` (B,) eV, ``energies`` (N,) eV per atom and ``forces``
        (N, 3) eV/Å. ``create_graph=True`` keeps the graph of the forces (for a force loss).
        """
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        with self._pass_settings(positions.device, create_graph):
            atom_energy = self.atom_energies(numbers, positions, edge_index, shifts,
                                             create_graph, batch)
            energy = structure_energies(atom_energy, batch, num_graphs)
            (grad,) = torch.autograd.grad(
                energy.sum(), positions, create_graph=create_graph, allow_unused=True
            )
        if grad is None:  # no edges: no interactions
            grad = torch.zeros_like(positions)
        return {"energy": energy, "energies": atom_energy, "forces": -grad}


def structure_energies(atom_energy: torch.Tensor, batch: torch.Tensor | None,
                       num_graphs: int) -> torch.Tensor:
    """Each structure's energy (B,) from atom energies (N,) and each atom's structure
    ``batch`` (N,) (None: one structure)."""
    if batch is None:
        return atom_energy.sum().reshape(1)
    return atom_energy.new_zeros(num_graphs).index_add_(0, batch, atom_energy)


def reference_initialisation(model: FreeCG) -> None:
    """Initialise ``model``'s parameters at the authors' scales (``init="reference"``).

    Where our default differs: each of the merged projections ``[q | k | s]`` and
    ``[dk | dv]`` is initialised as separate F x F Xavier-uniform matrices (their code has
    one linear layer each; as one 3F x F matrix the bound is 0.71 times, as 2F x F 0.82
    times theirs); the group-CG weights are uniform in ``+-sqrt(6 / ((G + 1) W))`` with
    ``W = 4 T^3`` weights per group (their Xavier bound for a (1, G, W) tensor, about
    1/31 of ours at G = 32); the embeddings' linear maps are Xavier-uniform with zero
    bias. The element embeddings keep torch's N(0, 1) in both.
    """
    hidden = model.config.hidden
    with torch.no_grad():
        for layer in model.layers:
            for merged in (layer.qks_proj, layer.dkdv_proj):
                for block in merged.weight.split(hidden, dim=0):
                    nn.init.xavier_uniform_(block)
                nn.init.zeros_(merged.bias)
            if layer.group_cg is not None:
                weight = layer.group_cg.weight
                groups, per_group = weight.shape[0], weight[0].numel()
                bound = math.sqrt(6.0 / ((groups + 1) * per_group))
                nn.init.uniform_(weight, -bound, bound)
        for linear in (model.neighbor_embedding.distance_proj, model.neighbor_embedding.combine,
                       model.edge_embedding.edge_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
