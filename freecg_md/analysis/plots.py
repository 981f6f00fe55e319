"""Figures of the chignolin study, drawn from arrays (matplotlib, no display needed).

Each function draws one figure into a PNG file and returns its path; the numbers behind it
come from the pure functions of this package, so the figures can be redrawn from CSV files.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .landscape import Basin, Landscape
from .statistics import MeltingFit, two_state_fraction

__all__ = ["new_figure", "plot_basin_errors", "plot_conformation_errors", "plot_landscapes",
           "plot_melting_curve", "plot_overlay", "plot_remd", "plot_rmsd_band"]

BASIN_STYLE = {"folded": ("*", "white"), "unfolded": ("X", "tab:red")}


def new_figure(nrows: int = 1, ncols: int = 1, **options: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` as ``pyplot.subplots(nrows, ncols, **options)`` gives them, but
    without pyplot: the figure belongs to no backend and no global figure list, so drawing
    files here neither changes the caller's backend (a notebook's stays inline) nor needs
    a display. ``figsize`` and ``layout`` go to the figure, the rest to its subplots."""
    figure = Figure(figsize=options.pop("figsize", None), layout=options.pop("layout", None))
    return figure, figure.subplots(nrows, ncols, **options)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_landscapes(panels: Sequence[tuple[str, Landscape]],
                    basins: Sequence[Sequence[Basin]], native: tuple[float, float],
                    labels: tuple[str, str], title: str, path: str | os.PathLike,
                    max_free_energy: float | None = None, depths: bool = True) -> Path:
    """Filled contours of one or more landscapes side by side, one colour bar each.

    Parameters
    ----------
    panels:
        ``(subtitle, landscape)`` per panel (e.g. histogram and MBAR).
    basins:
        The basins to mark on each panel (same order as ``panels``).
    native:
        The native structure's point, marked with a circle.
    labels:
        Axis labels, with units.
    max_free_energy:
        Upper end of the colour scale, kcal/mol (default: each panel's maximum).
    depths:
        False for a run that is not converged: each panel shows only which bins were
        sampled, in one colour, and the basins' positions without free energies.
    """
    figure, axes = new_figure(1, len(panels), figsize=(6.2 * len(panels), 4.8),
                              squeeze=False, layout="constrained")
    for ax, (subtitle, landscape), marks in zip(axes[0], panels, basins, strict=True):
        if not depths:
            _draw_sampled_region(ax, landscape, marks, native, labels, subtitle)
            continue
        free = np.ma.masked_invalid(landscape.free_energy.T)
        top = max_free_energy or (float(free.max()) if free.count() else 1.0)
        levels = np.linspace(0.0, max(top, 1e-6), 13)
        # Every sampled bin drawn as it is, then filled contours over it: where the data
        # are dense the contours cover the bins, where sparse (contourf needs four sampled
        # neighbours) no sampled bin disappears.
        ax.pcolormesh(landscape.x_edges, landscape.y_edges, np.ma.masked_greater(free, top),
                      cmap="viridis", vmin=0.0, vmax=levels[-1])
        filled = ax.contourf(landscape.x_centers, landscape.y_centers,
                             np.ma.masked_greater(free, top), levels=levels, cmap="viridis")
        figure.colorbar(filled, ax=ax, label="free energy (kcal/mol)")
        _mark_and_label(ax, landscape, native, labels, f"{subtitle}, "
                        f"{landscape.temperature:.0f} K",
                        [(b, f"{b.name} basin ({b.free_energy:.2f} kcal/mol)") for b in marks
                         if np.isfinite(b.free_energy)])
    figure.suptitle("\n".join(textwrap.fill(line, 70 * len(panels))
                               for line in title.split("\n")), fontsize=10)
    return _save(figure, path)


def _draw_sampled_region(ax: Axes, landscape: Landscape, marks: Sequence[Basin],
                         native: tuple[float, float], labels: tuple[str, str],
                         subtitle: str) -> None:
    """The bins a run visited, in one colour: where it went, with no depth claimed."""
    visited = np.isfinite(landscape.free_energy.T).astype(float)
    ax.pcolormesh(landscape.x_edges, landscape.y_edges, np.ma.masked_equal(visited, 0),
                  cmap="Greys", vmin=0, vmax=1.5)
    _mark_and_label(ax, landscape, native, labels,
                    f"{subtitle}, {landscape.temperature:.0f} K: sampled bins",
                    [(b, f"most visited {b.name} bin") for b in marks if np.isfinite(b.x)])


def _mark_and_label(ax: Axes, landscape: Landscape, native: tuple[float, float],
                    labels: tuple[str, str], title: str,
                    marks: Sequence[tuple[Basin, str]]) -> None:
    """The native point, the basins with their legend texts, limits, labels and title."""
    ax.plot(*native, "o", mfc="none", mec="black", ms=10, label="native (5AWL)")
    for basin, text in marks:
        marker, colour = BASIN_STYLE.get(basin.name, ("D", "black"))
        ax.plot(basin.x, basin.y, marker, color=colour, mec="black", ms=13, label=text)
    ax.set_xlim(landscape.x_edges[0], landscape.x_edges[-1])
    ax.set_ylim(landscape.y_edges[0], landscape.y_edges[-1])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)


def plot_melting_curve(temperatures: np.ndarray, fraction: np.ndarray, error: np.ndarray,
                       title: str, path: str | os.PathLike, fit: MeltingFit | None = None
                       ) -> Path:
    """Folded fraction against temperature with ±1 standard-error bars, and the two-state
    fit with its melting temperature where ``fit`` is given.

    ``temperatures`` (K,) K, ``fraction`` and ``error`` (K,) (NaN where nothing was sampled).
    """
    figure, ax = new_figure(figsize=(6.0, 4.0))
    ax.errorbar(temperatures, fraction, yerr=error, fmt="o-" if fit is None else "o",
                capsize=3, color="tab:blue", label="sampled (±1 standard error)")
    if fit is not None:
        grid = np.linspace(np.min(temperatures) - 10, np.max(temperatures) + 10, 200)
        ax.plot(grid, two_state_fraction(grid, fit.melting_temperature, fit.enthalpy),
                color="tab:orange",
                label=(f"two-state fit: Tm {fit.melting_temperature:.0f} ± "
                       f"{fit.melting_temperature_error:.0f} K"
                       + ("" if fit.within_ladder else " (extrapolated)")))
        ax.axvline(fit.melting_temperature, color="tab:orange", lw=0.8, ls="--")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("folded fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(textwrap.fill(title, 80), fontsize=8)
    return _save(figure, path)


def plot_rmsd_band(time_ps: np.ndarray, rmsd: np.ndarray, title: str,
                   path: str | os.PathLike, selection: str = "Cα") -> Path:
    """Mean RMSD over trajectories with a shaded ±1 standard deviation band.

    ``time_ps`` (F,) ps and ``rmsd`` (T, F) Å, one row per trajectory.
    """
    rmsd = np.atleast_2d(rmsd)
    mean, std = rmsd.mean(axis=0), rmsd.std(axis=0)
    figure, ax = new_figure(figsize=(6.4, 4.0))
    for row in rmsd:
        ax.plot(time_ps, row, color="tab:blue", lw=0.5, alpha=0.25)
    ax.fill_between(time_ps, mean - std, mean + std, color="tab:blue", alpha=0.3,
                    label="±1 standard deviation")
    ax.plot(time_ps, mean, color="tab:blue", lw=2, label=f"mean of {len(rmsd)} trajectories")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel(f"{selection} RMSD to native (Å)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def plot_remd(temperatures: np.ndarray, acceptance: np.ndarray, time_ps: np.ndarray,
              temperature_index: np.ndarray, title: str, path: str | os.PathLike) -> Path:
    """Acceptance per neighbouring pair (bars) and each replica's walk through temperature.

    ``temperatures`` (K,) K, ``acceptance`` (K-1,) fractions (NaN: never attempted),
    ``time_ps`` (F,), ``temperature_index`` (F, R) ladder index of each replica per frame.
    """
    figure, (left, right) = new_figure(1, 2, figsize=(12, 4.2),
                                       gridspec_kw={"width_ratios": [1, 1.4]})
    pairs = [f"{a:.0f}-{b:.0f}" for a, b in zip(temperatures[:-1], temperatures[1:],
                                                strict=True)]
    left.bar(range(len(pairs)), np.nan_to_num(acceptance), color="tab:green")
    left.set_xticks(range(len(pairs)), pairs, rotation=45, ha="right", fontsize=8)
    left.set_xlabel("neighbouring temperatures (K)")
    left.set_ylabel("exchange acceptance")
    left.set_ylim(0, 1)
    left.set_title("acceptance per pair")
    colours = matplotlib.colormaps["tab10"](np.linspace(0, 1, max(temperature_index.shape[1], 1)))
    for r in range(temperature_index.shape[1]):
        right.step(time_ps, temperatures[temperature_index[:, r]], where="post",
                   color=colours[r % len(colours)], lw=1, label=f"replica {r}")
    right.set_xlabel("time (ps)")
    right.set_ylabel("temperature (K)")
    right.set_title("replica walks through temperature")
    right.legend(fontsize=7, ncol=2, loc="upper right")
    figure.suptitle(title)
    return _save(figure, path)


def plot_conformation_errors(names: Sequence[str], energy_error: dict[str, np.ndarray],
                             force_mae: dict[str, np.ndarray], title: str,
                             path: str | os.PathLike, units: str = "kcal/mol") -> Path:
    """Grouped bars: per conformation, each model's absolute energy error and force MAE.

    ``energy_error`` and ``force_mae`` map a model name to (C,) values in ``units`` and
    ``units``/Å for the C conformations ``names``.
    """
    figure, axes = new_figure(1, 2, figsize=(12, 4.2))
    positions = np.arange(len(names))
    width = 0.8 / max(len(energy_error), 1)
    for panel, (values, ylabel) in zip(
            axes, ((energy_error, f"|energy error| ({units})"),
                   (force_mae, f"force MAE ({units}/Å)")), strict=True):
        for m, (model, errors) in enumerate(values.items()):
            panel.bar(positions + (m - (len(values) - 1) / 2) * width, np.abs(errors), width,
                      label=model)
        panel.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
        panel.set_ylabel(ylabel)
        panel.legend(fontsize=8)
    axes[0].set_title("energy")
    axes[1].set_title("forces")
    figure.suptitle(title)
    return _save(figure, path)


def plot_basin_errors(examples: Sequence[str], energy_error: dict[str, np.ndarray],
                      force_mae: dict[str, np.ndarray], summary: Sequence, title: str,
                      path: str | os.PathLike) -> Path:
    """Six example conformations and the per-basin means, model by model.

    ``examples`` (C,) names of the example conformations; ``energy_error`` and
    ``force_mae`` map a model to its (C,) signed energy errors (kcal/mol) and force MAEs
    (kcal/mol/Å) on them; ``summary`` the :class:`~.conformations.BasinErrors` of every
    model and basin (means over all picked conformations, with standard errors).
    """
    figure, axes = new_figure(1, 3, figsize=(16, 4.4),
                              gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
    positions = np.arange(len(examples))
    width = 0.8 / max(len(energy_error), 1)
    for panel, values, ylabel in ((axes[0], energy_error, "energy error, model - reference "
                                   "(kcal/mol)"),
                                  (axes[1], force_mae, "force MAE (kcal/mol/Å)")):
        for m, (model, errors) in enumerate(values.items()):
            panel.bar(positions + (m - (len(values) - 1) / 2) * width, errors, width,
                      label=model)
        panel.axhline(0, color="black", lw=0.6)
        panel.set_xticks(positions, examples, rotation=30, ha="right", fontsize=8)
        panel.set_ylabel(ylabel)
        panel.legend(fontsize=8)
    axes[0].set_title("examples: energy")
    axes[1].set_title("examples: forces")
    models = list(dict.fromkeys(s.model for s in summary))
    basins = list(dict.fromkeys(s.basin for s in summary))
    for m, model in enumerate(models):
        rows = [next(s for s in summary if s.model == model and s.basin == b) for b in basins]
        x = np.arange(len(basins)) + (m - (len(models) - 1) / 2) * 0.35
        axes[2].errorbar(x - 0.04, [r.bias for r in rows], yerr=[r.bias_error for r in rows],
                         fmt="o", capsize=3, color=f"C{m}",
                         label=f"{model}: energy bias (kcal/mol)")
        axes[2].errorbar(x + 0.04, [r.force_mae for r in rows],
                         yerr=[r.force_mae_error for r in rows], fmt="s", capsize=3,
                         color=f"C{m}", mfc="none",
                         label=f"{model}: force MAE (kcal/mol/Å)")
    axes[2].axhline(0, color="black", lw=0.6)
    counts = {b: next(s.n for s in summary if s.basin == b) for b in basins}
    axes[2].set_xticks(range(len(basins)), [f"{b} ({counts[b]})" for b in basins])
    axes[2].set_title("per basin: mean ± standard error")
    # Below the panel: inside it would hide a mean wherever it lies.
    axes[2].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_overlay(reference: Landscape, depths: bool, runs: Sequence[tuple[str, np.ndarray]],
                 native: tuple[float, float], labels: tuple[str, str], title: str,
                 path: str | os.PathLike) -> Path:
    """Runs' frames (each ``(name, (F, 2) cvs)``) drawn over a reference landscape on the
    same axes and bins: ``F`` in kcal/mol where ``depths`` (a converged reference),
    otherwise the bins it visited."""
    figure, ax = new_figure(figsize=(7.5, 6))
    if depths:
        mesh = ax.pcolormesh(reference.x_edges, reference.y_edges, reference.free_energy.T,
                             cmap="viridis", shading="flat")
        figure.colorbar(mesh, ax=ax, label=f"reference F at {reference.temperature:.0f} K "
                                             "(kcal/mol)")
    else:
        visited = np.isfinite(reference.free_energy.T).astype(float)
        ax.pcolormesh(reference.x_edges, reference.y_edges, np.ma.masked_equal(visited, 0),
                      cmap="Greys", vmin=0, vmax=1.5)
    for k, (name, cvs) in enumerate(runs):
        ax.scatter(cvs[:, 0], cvs[:, 1], s=8, alpha=0.6, color=f"C{k + 1}",
                   marker="os^vD<>"[k % 7], label=f"{name} ({len(cvs)} frames)")
    ax.plot(*native, "o", mfc="none", mec="black", ms=10, label="native (5AWL)")
    ax.set_xlim(reference.x_edges[0], reference.x_edges[-1])
    ax.set_ylim(reference.y_edges[0], reference.y_edges[-1])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    return _save(figure, path)
