"""Free-energy landscapes over two collective variables: from a histogram at one
temperature, and reweighted from every temperature of a replica-exchange run with MBAR."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from ase import units

from .statistics import KB_KCAL, check_finite, check_temperatures

__all__ = ["KB_KCAL", "Basin", "Landscape", "folded_unfolded_basins", "free_energy_2d",
           "mbar_free_energy_2d", "mbar_weights"]



@dataclass(frozen=True)
class Landscape:
    """``F(x, y)`` on a grid, kcal/mol, minimum 0, NaN where no sample fell.

    Attributes
    ----------
    free_energy:
        (nx, ny) kcal/mol.
    x_edges, y_edges:
        Bin edges, units of the variables.
    temperature:
        K.
    """

    free_energy: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    temperature: float

    @property
    def x_centers(self) -> np.ndarray:
        return 0.5 * (self.x_edges[1:] + self.x_edges[:-1])

    @property
    def y_centers(self) -> np.ndarray:
        return 0.5 * (self.y_edges[1:] + self.y_edges[:-1])

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(nx, ny) x and y of every bin's centre."""
        return np.meshgrid(self.x_centers, self.y_centers, indexing="ij")

    def lowest(self, where: np.ndarray) -> tuple[float, float, float]:
        """Lowest ``(F, x, y)`` among the sampled bins where ``where`` (nx, ny) is True;
        all NaN if none of them was sampled."""
        values = np.where(where & np.isfinite(self.free_energy), self.free_energy, np.inf)
        if not np.isfinite(values).any():
            return float("nan"), float("nan"), float("nan")
        x, y = self.grid()
        i, j = np.unravel_index(np.argmin(values), values.shape)
        return float(values[i, j]), float(x[i, j]), float(y[i, j])

    def minimum_in(self, x_range: tuple[float, float], y_range: tuple[float, float]
                   ) -> tuple[float, float, float]:
        """Lowest ``(F, x, y)`` inside a rectangle (a basin); F is NaN if it is empty."""
        x, y = self.grid()
        return self.lowest((x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0])
                           & (y <= y_range[1]))


def _landscape(counts: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray,
               temperature: float) -> Landscape:
    total = counts.sum()
    if total <= 0:
        raise ValueError("no samples fell inside the histogram range")
    with np.errstate(divide="ignore"):
        free = -KB_KCAL * temperature * np.log(counts / total)
    free[counts <= 0] = np.nan
    free -= np.nanmin(free)
    return Landscape(free, x_edges, y_edges, float(temperature))


def free_energy_2d(x: np.ndarray, y: np.ndarray, temperature: float, bins: int = 40,
                   ranges: tuple[tuple[float, float], tuple[float, float]] | None = None,
                   weights: np.ndarray | None = None) -> Landscape:
    """``F = -k_B T ln p(x, y)`` from samples (a histogram), kcal/mol, minimum at zero.

    Parameters
    ----------
    x, y:
        (n,) samples of the two variables (e.g. distances in Å), drawn at ``temperature``.
    temperature:
        K.
    bins, ranges:
        Histogram bins per axis and ``((x_min, x_max), (y_min, y_max))``.
    weights:
        Optional (n,) sample weights (e.g. from reweighting).
    """
    x, y = check_finite("x", x, ndim=1), check_finite("y", y, ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length; got {x.shape} and {y.shape}")
    temperature = float(check_temperatures("temperature", temperature)[0])
    if weights is not None:
        weights = check_finite("weights", weights, ndim=1)
        if weights.shape != x.shape:
            raise ValueError(f"weights has {weights.size} values; x has {x.size}")
        if np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
    counts, x_edges, y_edges = np.histogram2d(x, y, bins=bins, range=ranges, weights=weights)
    return _landscape(counts, x_edges, y_edges, temperature)


def mbar_weights(energies: np.ndarray, sampled_temperature: np.ndarray,
                 target_temperature: float) -> np.ndarray:
    """MBAR weights of every sample at ``target_temperature`` (they sum to 1).

    Each sample ``n`` has a potential energy ``energies[n]`` (eV) and was drawn at
    ``sampled_temperature[n]`` (K, one of a ladder). pymbar solves for the dimensionless
    free energies ``f_k`` of the ladder's states from the reduced potentials
    ``u_k(x_n) = E_n / (k_B T_k)``; a sample's weight in the target state is then
    ``w_n ∝ exp(-u_target(x_n)) / sum_k N_k exp(f_k - u_k(x_n))``.
    """
    # pymbar prints a banner about JAX and a timeseries warning on import.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from pymbar import MBAR

    energies = check_finite("energies", energies, ndim=1)
    sampled = check_temperatures("sampled_temperature", sampled_temperature)
    target_temperature = float(check_temperatures("target_temperature", target_temperature)[0])
    if energies.shape != sampled.shape:
        raise ValueError(f"energies {energies.shape} and sampled_temperature "
                         f"{sampled.shape} must have the same shape")
    ladder = np.unique(sampled)
    u_kn = energies[None, :] / (units.kB * ladder[:, None])
    n_k = np.array([(sampled == t).sum() for t in ladder])
    # pymbar wants the samples grouped by the state that drew them.
    order = np.argsort(np.searchsorted(ladder, sampled), kind="stable")
    try:
        f_k = MBAR(u_kn[:, order], n_k, initialize="BAR").f_k
    except Exception:  # noqa: BLE001 - pymbar 4.0's BAR start fails on poorly overlapping
        # states (and then raises a NameError of its own); the zeros start always works.
        f_k = MBAR(u_kn[:, order], n_k, initialize="zeros").f_k
    log_denominator = np.logaddexp.reduce(
        np.log(n_k)[:, None] + f_k[:, None] - u_kn, axis=0)
    log_w = -energies / (units.kB * target_temperature) - log_denominator
    weights = np.exp(log_w - log_w.max())
    return weights / weights.sum()


def mbar_free_energy_2d(x: np.ndarray, y: np.ndarray, energies: np.ndarray,
                        sampled_temperature: np.ndarray, target_temperature: float,
                        bins: int = 40,
                        ranges: tuple[tuple[float, float], tuple[float, float]] | None = None
                        ) -> Landscape:
    """The landscape at ``target_temperature`` from the samples of every temperature,
    reweighted with MBAR (see :func:`mbar_weights`)."""
    weights = mbar_weights(energies, sampled_temperature, target_temperature)
    if np.size(x) != weights.size:
        raise ValueError(f"x has {np.size(x)} samples; energies has {weights.size}")
    return free_energy_2d(x, y, target_temperature, bins, ranges, weights)


@dataclass(frozen=True)
class Basin:
    """The lowest point of a region of a landscape: ``free_energy`` kcal/mol at ``(x, y)``
    (NaN when no sample fell in the region)."""

    name: str
    free_energy: float
    x: float
    y: float


def folded_unfolded_basins(landscape: Landscape, native: tuple[float, float],
                           folded_radius: float = 1.5, unfolded_radius: float = 3.0
                           ) -> tuple[Basin, Basin]:
    """The folded and unfolded basins of a landscape over two distances.

    The folded basin is the lowest bin within ``folded_radius`` of the native structure's
    point ``native = (x, y)`` (same units as the variables, Å); the unfolded basin is the
    lowest bin farther than ``unfolded_radius`` from it. Between the two radii lies the
    border region, which belongs to neither.
    """
    if not 0 < folded_radius <= unfolded_radius:
        raise ValueError(f"folded_radius={folded_radius}, unfolded_radius={unfolded_radius}: "
                         "expected 0 < folded_radius <= unfolded_radius")
    x, y = landscape.grid()
    distance = np.hypot(x - native[0], y - native[1])
    return (Basin("folded", *landscape.lowest(distance <= folded_radius)),
            Basin("unfolded", *landscape.lowest(distance > unfolded_radius)))
