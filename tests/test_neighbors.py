"""Neighbour lists against brute force, and the Verlet-skin cache."""

import itertools

import numpy as np
import pytest

from freecg_md.neighbors import NeighborListCache, build_neighbor_list, has_torch_cluster

BACKENDS = ["vesin"] + (["torch_cluster"] if has_torch_cluster() else [])


def brute_force_pairs(positions, cutoff, cell=None, pbc=(False, False, False)):
    """Every (i, j, shift) with |r_j + S cell - r_i| < cutoff, by an explicit image sum."""
    pbc = np.asarray(pbc)
    if pbc.any():
        heights = abs(np.linalg.det(cell)) / np.linalg.norm(
            np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1
        )
        reach = np.where(pbc, np.ceil(cutoff / heights).astype(int) + 1, 0)
    else:
        reach = np.zeros(3, int)
        cell = np.zeros((3, 3))
    pairs = set()
    ranges = [range(-r, r + 1) for r in reach]
    for shift in itertools.product(*ranges):
        offset = np.array(shift) @ cell
        d = np.linalg.norm(positions[None, :, :] + offset - positions[:, None, :], axis=-1)
        for i, j in zip(*np.nonzero(d < cutoff), strict=True):
            if i != j or any(shift):
                pairs.add((int(i), int(j), *shift))
    return pairs


def as_pairs(nl):
    return {
        (int(i), int(j), *map(int, s))
        for (i, j), s in zip(nl.edge_index.T, nl.cell_shifts, strict=True)
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_molecule_matches_brute_force(backend):
    positions = np.random.default_rng(0).uniform(0, 8, size=(60, 3))
    nl = build_neighbor_list(positions, 3.0, backend=backend)
    assert as_pairs(nl) == brute_force_pairs(positions, 3.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_system_keeps_every_neighbour(backend):
    # 300 atoms in a 6 Å cube: about 150 neighbours each within 5 Å, far over the cap of 32
    # that the reference code applies silently.
    positions = np.random.default_rng(1).uniform(0, 6, size=(300, 3))
    nl = build_neighbor_list(positions, 5.0, backend=backend)
    counts = np.bincount(nl.edge_index[0], minlength=300)
    assert counts.min() > 32
    assert as_pairs(nl) == brute_force_pairs(positions, 5.0)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_periodic_matches_brute_force_image_sum(pbc):
    rng = np.random.default_rng(2)
    # A skewed cell smaller than twice the cutoff: several images of one atom are neighbours.
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.5, 0.7, 5.0]])
    positions = rng.uniform(0, 1, size=(10, 3)) @ cell
    nl = build_neighbor_list(positions, 5.0, cell=cell, pbc=pbc)
    expected = brute_force_pairs(positions, 5.0, cell, pbc)
    assert as_pairs(nl) == expected
    assert any(s != (0, 0, 0) for *_, s0, s1, s2 in expected for s in [(s0, s1, s2)])


def test_a_zero_vector_along_a_non_periodic_direction_is_accepted():
    """ASE leaves a slab's or a nanotube's non-periodic cell vectors zero: the list is the
    one of any cell with those periodic vectors; dependent periodic vectors are refused."""
    rng = np.random.default_rng(3)
    positions = rng.uniform(0, 4, size=(12, 3))
    slab = np.array([[4.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.0, 0.0, 0.0]])
    boxed = slab.copy()
    boxed[2] = [0.0, 0.0, 30.0]
    pbc = (True, True, False)
    zero = build_neighbor_list(positions, 3.0, cell=slab, pbc=pbc)
    assert as_pairs(zero) == as_pairs(build_neighbor_list(positions, 3.0, cell=boxed, pbc=pbc))
    assert as_pairs(zero) == brute_force_pairs(positions, 3.0, boxed, pbc)
    tube = np.diag([0.0, 0.0, 4.0])
    assert as_pairs(build_neighbor_list(positions, 3.0, cell=tube, pbc=(False, False, True))) \
        == brute_force_pairs(positions, 3.0, np.diag([50.0, 50.0, 4.0]), (False, False, True))
    with pytest.raises(ValueError, match="independent periodic"):
        build_neighbor_list(positions, 3.0, cell=np.array([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 5]]),
                            pbc=(True, True, False))


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        build_neighbor_list(np.array([[0, 0, 0], [np.nan, 0, 0]]), 5.0)
    with pytest.raises(ValueError, match="cell"):
        build_neighbor_list(np.zeros((2, 3)), 5.0, cell=np.zeros((3, 3)), pbc=True)
    with pytest.raises(ValueError, match="backend"):
        build_neighbor_list(np.zeros((2, 3)), 5.0, backend="ase")


def test_cache_reuses_until_an_atom_moves_half_the_skin():
    rng = np.random.default_rng(3)
    positions = rng.uniform(0, 10, size=(40, 3))
    numbers = np.ones(40, int)
    cache = NeighborListCache(cutoff=3.0, skin=1.0)
    first = cache.get(positions, numbers)
    moved = positions.copy()
    moved[5] += [0.49, 0, 0]
    assert cache.get(moved, numbers) is first
    moved[5] += [0.02, 0, 0]
    assert cache.get(moved, numbers) is not first
    assert cache.stats == {"builds": 2, "reuses": 1}


def test_cache_rebuilds_when_numbers_cell_or_pbc_change():
    positions = np.random.default_rng(4).uniform(0, 5, size=(8, 3))
    numbers = np.ones(8, int)
    cell = np.eye(3) * 6
    cache = NeighborListCache(cutoff=3.0, skin=1.0)
    cache.get(positions, numbers, cell, True)
    cache.get(positions, numbers + 1, cell, True)
    cache.get(positions, numbers + 1, cell * 1.01, True)
    cache.get(positions, numbers + 1, cell * 1.01, False)
    cache.get(positions[:7], numbers[:7] + 1, cell * 1.01, False)
    assert cache.stats == {"builds": 5, "reuses": 0}


def test_cache_random_walk_always_contains_every_pair_within_cutoff():
    """Along a random walk, the cached list is a superset of the exact list."""
    rng = np.random.default_rng(5)
    positions = rng.uniform(0, 7, size=(120, 3))  # dense: > 32 neighbours within 5 Å
    numbers = np.ones(120, int)
    cache = NeighborListCache(cutoff=5.0, skin=0.8)
    for _ in range(60):
        positions = positions + rng.normal(scale=0.05, size=positions.shape)
        cached = as_pairs(cache.get(positions, numbers))
        exact = as_pairs(build_neighbor_list(positions, 5.0))
        assert exact <= cached
    assert cache.n_reuses > 30 and cache.n_builds > 1


def test_zero_skin_never_reuses():
    cache = NeighborListCache(cutoff=3.0, skin=0.0)
    positions = np.zeros((3, 3)) + np.arange(3)[:, None]
    for _ in range(3):
        cache.get(positions, np.ones(3, int))
    assert cache.stats == {"builds": 3, "reuses": 0}
    with pytest.raises(ValueError, match="skin"):
        NeighborListCache(cutoff=3.0, skin=-1)
