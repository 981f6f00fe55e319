"""Statistics of correlated MD samples: equilibration, decorrelation, error bars, folding.

pymbar's conventions: a time series is cut at the start of its equilibrated region
(Chodera, JCTC 2016: the start that maximises the number of effectively uncorrelated
samples), its statistical inefficiency ``g`` (``1 + 2 sum of its normalised
autocorrelation``) says how many frames make one independent sample, and estimates use
every ``g``-th frame. Uncertainties come from a bootstrap over blocks of ``g`` frames, which
keeps the correlation inside each block.

Every function checks its inputs and raises a ValueError that names the problem (empty,
NaN or infinite samples, mismatched lengths, non-positive temperatures); none returns a
silent NaN.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from ase import units

KB_KCAL = units.kB / (units.kcal / units.mol)  # kcal/mol/K

__all__ = [
    "Approach",
    "Equilibration",
    "FoldingEstimate",
    "MeltingFit",
    "Trend",
    "approach_curve",
    "block_bootstrap",
    "check_finite",
    "check_temperatures",
    "decorrelated_indices",
    "detect_equilibration",
    "folded_mask",
    "folding_free_energy",
    "geometric_approach",
    "linear_trend",
    "mean_and_standard_error",
    "melting_temperature",
    "statistical_inefficiency",
    "two_state_fraction",
]


def check_finite(name: str, values: np.ndarray | list, ndim: int | None = None,
                 min_length: int = 1) -> np.ndarray:
    """``values`` as a float array, or a ValueError naming ``name`` and what is wrong."""
    array = np.asarray(values, dtype=np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} has shape {array.shape}; expected {ndim} dimension(s)")
    if array.size == 0 or (array.ndim and len(array) < min_length):
        raise ValueError(f"{name} is empty or too short ({len(array) if array.ndim else 0} "
                         f"values); expected at least {min_length}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.unravel_index(np.argmax(bad), array.shape)
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s) (first at "
                         f"index {tuple(int(i) for i in first)}); expected finite numbers")
    return array


def check_temperatures(name: str, temperatures: np.ndarray | list | float) -> np.ndarray:
    """Temperatures (K) as a float array, or a ValueError if any is not finite and > 0."""
    array = check_finite(name, np.atleast_1d(temperatures))
    if np.any(array <= 0):
        raise ValueError(f"{name}={array.tolist()[:8]}: expected temperatures > 0 K")
    return array


def _timeseries():  # noqa: ANN202 - the pymbar module
    # pymbar prints a banner about JAX on import.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from pymbar import timeseries
    return timeseries


def statistical_inefficiency(series: np.ndarray) -> float:
    """``g >= 1`` of a time series (frames per independent sample); 1 for a constant one."""
    series = check_finite("series", series, ndim=1, min_length=2)
    if np.ptp(series) == 0:
        return 1.0
    return float(max(_timeseries().statistical_inefficiency(series, fast=False), 1.0))


@dataclass(frozen=True)
class Equilibration:
    """Where a time series becomes stationary.

    Attributes
    ----------
    start:
        Index of the first equilibrated frame.
    inefficiency:
        Statistical inefficiency ``g`` of the series from ``start`` on.
    n_effective:
        ``(n - start) / g``, the number of effectively independent samples.
    """

    start: int
    inefficiency: float
    n_effective: float


def detect_equilibration(series: np.ndarray) -> Equilibration:
    """The start of the equilibrated region of ``series`` (F,), by pymbar's
    ``detect_equilibration`` (the start maximising the effective sample count)."""
    series = check_finite("series", series, ndim=1, min_length=3)
    if np.ptp(series) == 0:
        return Equilibration(0, 1.0, float(len(series)))
    start, g, _ = _timeseries().detect_equilibration(series, fast=False)
    g = float(max(g, 1.0))
    return Equilibration(int(start), g, (len(series) - int(start)) / g)


def mean_and_standard_error(values: np.ndarray) -> tuple[float, float]:
    """The mean of independent ``values`` (n,) and its standard error ``s / sqrt(n)`` (``s``
    with n - 1 in the denominator); the error is NaN below two values, the mean below one."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return float("nan"), float("nan")
    error = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else np.nan
    return float(values.mean()), error


def decorrelated_indices(n_frames: int, inefficiency: float, start: int = 0) -> np.ndarray:
    """Indices of frames ``start, start + g, start + 2g, ...`` (rounded), below ``n_frames``."""
    if not (np.isfinite(inefficiency) and inefficiency >= 1):
        raise ValueError(f"inefficiency={inefficiency!r}: expected a number >= 1")
    if not 0 <= start < n_frames:
        raise ValueError(f"start={start} is outside the {n_frames} frames")
    taken = np.unique(np.round(np.arange(start, n_frames, inefficiency)).astype(np.int64))
    return taken[taken < n_frames]


def block_bootstrap(samples: np.ndarray, statistic, block: int = 1,  # noqa: ANN001
                    n_bootstrap: int = 500, seed: int = 0) -> tuple[float, float]:
    """``statistic(samples)`` and its standard error by a bootstrap over blocks.

    ``samples`` (n, ...) in time order; blocks of ``block`` consecutive samples (a
    statistical inefficiency, rounded up) are drawn with replacement (``n // block`` of
    them) so that correlation within a block is kept. Returns the estimate on all samples
    and the standard deviation over ``n_bootstrap`` resamples. Where the statistic is not
    finite on some resample (a free energy of a resample that holds one basin only) the
    error is infinite: those resamples are the tail the spread would have to include, and
    leaving them out would understate it.
    """
    samples = np.asarray(samples)
    if len(samples) == 0:
        raise ValueError("samples is empty; expected at least one sample")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples holds NaN or infinite values; expected finite samples")
    if not (np.isfinite(block) and block >= 1):
        raise ValueError(f"block={block!r}: expected a number of samples >= 1")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap={n_bootstrap!r}: expected a whole number of "
                         "resamples >= 2")
    block = int(np.ceil(block))
    n_blocks = len(samples) // block
    if n_blocks < 2:
        raise ValueError(f"{len(samples)} samples make {n_blocks} block(s) of {block}; expected "
                         "at least 2 blocks for a bootstrap")
    rng = np.random.default_rng(seed)
    usable = samples[: n_blocks * block].reshape(n_blocks, block, *samples.shape[1:])
    values = []
    for _ in range(int(n_bootstrap)):
        chosen = usable[rng.integers(0, n_blocks, n_blocks)]
        values.append(statistic(chosen.reshape(-1, *samples.shape[1:])))
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return float(statistic(samples)), float("inf")
    return float(statistic(samples)), float(np.std(values, ddof=1))


@dataclass(frozen=True)
class Trend:
    """How ``y`` follows ``x`` over independent samples: the least-squares slope and its
    standard error (units of y per unit of x), and Spearman's rank correlation with its
    two-sided p-value (no linearity assumed)."""

    n: int
    slope: float
    slope_error: float
    spearman: float
    p_value: float


def linear_trend(x: np.ndarray, y: np.ndarray) -> Trend:
    """The :class:`Trend` of ``y`` (n,) against ``x`` (n,), for samples that are independent
    (e.g. conformations picked apart, not consecutive MD frames)."""
    from scipy import stats

    x, y = check_finite("x", x, ndim=1), check_finite("y", y, ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} values but y has {y.size}; expected one y per x")
    if x.size < 3 or np.ptp(x) == 0:
        raise ValueError(f"x has {x.size} values spanning {np.ptp(x) if x.size else 0}; "
                         "expected at least 3 that are not all equal")
    fit = stats.linregress(x, y)
    rank = stats.spearmanr(x, y)
    return Trend(int(x.size), float(fit.slope), float(fit.stderr), float(rank.statistic),
                 float(rank.pvalue))


@dataclass(frozen=True)
class Approach:
    """A fit of ``y(t) = limit + scale * ratio ** (t - first)`` to a sequence that levels
    off (a validation error by epoch t).

    Attributes: ``n`` the number of points fitted, ``first`` the first t fitted, ``last``
    the last, ``limit`` and ``limit_error`` (its standard error; units of y), ``scale``
    (y(first) - limit), ``ratio`` per step of t (0 < ratio < 1) and ``ratio_error``, and the
    residuals' root mean square. The errors come from the least-squares covariance scaled
    by the residuals, so they assume independent scatter about the curve and say nothing
    of a change of regime after the last point.
    """

    n: int
    first: float
    last: float
    limit: float
    limit_error: float
    scale: float
    ratio: float
    ratio_error: float
    rms_residual: float

    @property
    def fraction_seen(self) -> float:
        """The share of the fall from y(first) to the limit that the fitted points span,
        ``1 - ratio ** (last - first)``."""
        return float(1.0 - self.ratio ** (self.last - self.first))

    def at(self, t: np.ndarray | float) -> np.ndarray:
        """The fitted curve ``limit + scale * ratio ** (t - first)`` at ``t``."""
        return approach_curve(np.asarray(t, dtype=float) - self.first, self.limit,
                              self.scale, self.ratio)

    def steps_to(self, target: float) -> float | None:
        """Steps of t after ``first`` at which the curve reaches ``target`` (0 where it
        starts beyond it); None where it never does (the target lies beyond the limit)."""
        if (target - self.limit) * self.scale <= 0:
            return None
        return max(0.0, float(np.log((target - self.limit) / self.scale) / np.log(self.ratio)))


def approach_curve(steps: np.ndarray, limit: float, scale: float,
                   ratio: float) -> np.ndarray:
    """``limit + scale * ratio ** steps``: the curve :func:`geometric_approach` fits."""
    return limit + scale * ratio ** steps


def geometric_approach(n: np.ndarray, y: np.ndarray) -> Approach:
    """The :class:`Approach` of ``y`` (k,) at steps ``n`` (k,), at least 4 points with
    distinct, increasing n.

    Starts from the ratio of successive differences and refines all three parameters by
    least squares (scipy's ``curve_fit``), the ratio held within (0, 1).
    """
    from scipy.optimize import curve_fit

    n, y = check_finite("n", n, ndim=1), check_finite("y", y, ndim=1)
    if n.shape != y.shape:
        raise ValueError(f"n has {n.size} values but y has {y.size}; expected one y per n")
    if n.size < 4:
        raise ValueError(f"{n.size} points: a limit, a scale and a ratio need at least 4")
    if np.any(np.diff(n) <= 0):
        raise ValueError("n must increase strictly")
    steps = n - n[0]
    differences = np.diff(y) / np.diff(steps)
    guess = np.median(differences[1:] / differences[:-1]) if np.all(differences) else 0.5
    guess = float(np.clip(guess, 0.05, 0.95)) if np.isfinite(guess) else 0.5
    scale = (y[0] - y[-1]) / max(1.0 - guess ** steps[-1], 1e-12)
    try:
        (limit, amplitude, ratio), covariance = curve_fit(
            approach_curve, steps, y, p0=(y[0] - scale, scale, guess),
            bounds=([-np.inf, -np.inf, 1e-6], [np.inf, np.inf, 1.0 - 1e-9]), maxfev=20000)
    except RuntimeError as error:
        raise ValueError(f"no geometric approach fits these {n.size} points: {error}") from None
    residual = y - approach_curve(steps, limit, amplitude, ratio)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    return Approach(int(n.size), float(n[0]), float(n[-1]), float(limit), float(errors[0]),
                    float(amplitude), float(ratio), float(errors[2]),
                    float(np.sqrt(np.mean(residual ** 2))))


def folded_mask(cvs: np.ndarray, native: np.ndarray | tuple[float, float],
                radius: float = 1.5) -> np.ndarray:
    """(F,) True where the two distances lie within ``radius`` Å of the native point."""
    cvs = check_finite("cvs", cvs, ndim=2)
    native = check_finite("native", native, ndim=1)
    if cvs.shape[1] != native.size:
        raise ValueError(f"cvs has {cvs.shape[1]} columns but native has {native.size} values")
    if not radius > 0:
        raise ValueError(f"radius={radius!r}: expected a distance > 0 Å")
    return np.linalg.norm(cvs - native, axis=1) <= radius


@dataclass(frozen=True)
class FoldingEstimate:
    """The folded fraction and folding free energy at one temperature, with errors.

    ``free_energy`` is ``-kT ln(p_folded / p_unfolded)`` in kcal/mol (negative: folded
    favoured); it is None when one of the two states has no sample (then only a bound is
    known). ``n_folded`` and ``n_unfolded`` count the samples used.
    """

    temperature: float
    fraction: float
    fraction_error: float
    free_energy: float | None
    free_energy_error: float | None
    n_folded: int
    n_unfolded: int


def folding_free_energy(folded: np.ndarray, temperature: float, block: int = 1,
                        weights: np.ndarray | None = None, n_bootstrap: int = 500,
                        seed: int = 0) -> FoldingEstimate:
    """Folded fraction and ``dG = -kT ln(p_f / (1 - p_f))`` from (n,) folded flags in time
    order, optionally weighted (MBAR), with block-bootstrap errors (``block`` frames a
    block: the statistical inefficiency)."""
    folded = np.asarray(folded, dtype=bool)
    if folded.ndim != 1 or folded.size == 0:
        raise ValueError(f"folded has shape {folded.shape}; expected a non-empty 1-D array")
    temperature = float(check_temperatures("temperature", temperature)[0])
    if weights is None:
        weights = np.ones(folded.size)
    weights = check_finite("weights", weights, ndim=1)
    if weights.size != folded.size:
        raise ValueError(f"weights has {weights.size} values; folded has {folded.size}")
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    data = np.stack([folded.astype(np.float64), weights], axis=1)

    def fraction(sample: np.ndarray) -> float:
        return float((sample[:, 0] * sample[:, 1]).sum() / sample[:, 1].sum())

    def free_energy(sample: np.ndarray) -> float:
        p = fraction(sample)
        if p <= 0 or p >= 1:
            return np.nan
        return float(-KB_KCAL * temperature * np.log(p / (1 - p)))

    p, p_error = block_bootstrap(data, fraction, block, n_bootstrap, seed)
    n_folded, n_unfolded = int(folded.sum()), int((~folded).sum())
    if n_folded == 0 or n_unfolded == 0:
        return FoldingEstimate(temperature, p, p_error, None, None, n_folded, n_unfolded)
    dg, dg_error = block_bootstrap(data, free_energy, block, n_bootstrap, seed)
    return FoldingEstimate(temperature, p, p_error, dg, dg_error, n_folded, n_unfolded)


@dataclass(frozen=True)
class MeltingFit:
    """A two-state fit to a melting curve.

    ``melting_temperature`` (K) is where the folded fraction is one half, ``enthalpy``
    (kcal/mol) the folding enthalpy (negative: folding releases heat), each with its
    standard error from the fit's covariance, scaled up by the reduced chi-square
    ``reduced_chi_square`` where that exceeds 1 (the two-state curve misses the points by
    more than their errors); ``within_ladder`` says whether the melting temperature lies
    inside the sampled temperatures (outside it is an extrapolation); ``n_temperatures``
    counts the points fitted.
    """

    melting_temperature: float
    melting_temperature_error: float
    enthalpy: float
    enthalpy_error: float
    within_ladder: bool
    n_temperatures: int
    reduced_chi_square: float


def two_state_fraction(temperatures: np.ndarray, melting_temperature: float,
                       enthalpy: float) -> np.ndarray:
    """The folded fraction of a two-state folder with a temperature-independent enthalpy:
    ``1 / (1 + exp(dG / kT))`` with ``dG(T) = dH (1 - T / Tm)`` (kcal/mol; T, Tm in K)."""
    t = np.asarray(temperatures, dtype=np.float64)
    exponent = enthalpy * (1.0 - t / melting_temperature) / (KB_KCAL * t)
    return 1.0 / (1.0 + np.exp(np.clip(exponent, -700.0, 700.0)))


def melting_temperature(temperatures: np.ndarray, fraction: np.ndarray, error: np.ndarray,
                        samples: np.ndarray) -> MeltingFit | None:
    """Weighted least-squares fit of :func:`two_state_fraction` to a melting curve.

    ``temperatures`` (K,) K; ``fraction`` and ``error`` (K,) the folded fraction at each
    and its standard error (NaN: not sampled, left out); ``samples`` (K,) the decorrelated
    samples behind each. A fraction of 0 or 1 has a bootstrap error of 0, which would pin
    the fit to it, so every error is at least the binomial one of the Laplace estimate
    ``(k + 1) / (n + 2)``. None when fewer than 3 temperatures are usable, when the curve
    does not change (its highest and lowest points within their combined error), when the
    fit fails, finds the fraction rising with temperature (a positive enthalpy: not a
    melting curve), or puts the melting temperature more than the ladder's span outside it
    or with an error larger than that span (the data do not locate it).
    """
    from scipy.optimize import curve_fit

    t = check_temperatures("temperatures", temperatures)
    f = np.asarray(fraction, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    n = np.asarray(samples, dtype=np.float64)
    if not f.shape == e.shape == n.shape == t.shape:
        raise ValueError(f"temperatures, fraction, error and samples have shapes {t.shape}, "
                         f"{f.shape}, {e.shape}, {n.shape}; expected one shape")
    use = np.isfinite(f) & np.isfinite(e) & (n > 0)
    if use.sum() < 3:
        return None
    t, f, e, n = t[use], f[use], e[use], n[use]
    laplace = (f * n + 1.0) / (n + 2.0)
    sigma = np.maximum(e, np.sqrt(laplace * (1.0 - laplace) / n))
    high, low = int(np.argmax(f)), int(np.argmin(f))
    if f[high] - f[low] <= np.hypot(sigma[high], sigma[low]):
        return None
    # Start from where the curve crosses one half (or the nearer end), and a cooperative
    # folding enthalpy of the order of a small protein's.
    start = float(t[np.argmin(np.abs(f - 0.5))])
    try:
        (tm, dh), covariance = curve_fit(two_state_fraction, t, f, p0=(start, -10.0),
                                         sigma=sigma, absolute_sigma=True, maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    dof = len(t) - 2
    chi_square = float(np.sum(((f - two_state_fraction(t, tm, dh)) / sigma) ** 2))
    reduced = chi_square / dof if dof > 0 else float("nan")
    scale = max(1.0, reduced) if np.isfinite(reduced) else 1.0
    errors = np.sqrt(np.diag(covariance) * scale)
    span = float(t.max() - t.min())
    if not (np.all(np.isfinite(errors)) and np.isfinite(tm) and dh < 0
            and t.min() - span <= tm <= t.max() + span and errors[0] <= span):
        return None
    return MeltingFit(float(tm), float(errors[0]), float(dh), float(errors[1]),
                      bool(t.min() <= tm <= t.max()), int(use.sum()), reduced)
