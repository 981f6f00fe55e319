"""Replica exchange over a temperature ladder (parallel tempering).

Replicas keep their coordinates; what moves is the temperature *index* each replica is
simulated at (as in openmmtools' multistate samplers): ``temperature_of_replica[r]`` is the
index into the ladder of replica r's temperature and ``replica_of_temperature`` its inverse
permutation. Attempts alternate between the even pairs (0, 1), (2, 3), ... and the odd pairs
(1, 2), (3, 4), ..., starting with the even ones; a swap between neighbours k and k+1 held
by replicas a and b is accepted with the Metropolis probability::

    min(1, exp((beta_k - beta_{k+1}) (E_a - E_b)))

with E the potential energies and beta = 1 / (kB T). The random numbers come from the
exchange's own generator, so every process that feeds it the same energies makes the same
decisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import units

from .state import EXCHANGE_STREAM, replica_seed

__all__ = ["ReplicaExchange", "check_ladder", "temperature_ladder"]

# The legs of a replica's round trip (ReplicaExchange._leg).
_NOT_YET_AT_BOTTOM, _HEADING_UP, _HEADING_DOWN = 0, 1, 2


def check_ladder(temperatures: Sequence[float] | np.ndarray) -> np.ndarray:
    """A temperature ladder as a float64 (K,) array, K; ValueError unless it is non-empty,
    finite, positive and strictly increasing."""
    ladder = np.asarray(temperatures, dtype=np.float64)
    if ladder.ndim != 1 or ladder.size == 0:
        raise ValueError(f"temperatures has shape {ladder.shape}; expected a non-empty 1-D list")
    if not np.all(np.isfinite(ladder)) or np.any(ladder <= 0):
        raise ValueError(f"temperatures={ladder.tolist()}: expected finite values > 0 K")
    if np.any(np.diff(ladder) <= 0):
        k = int(np.nonzero(np.diff(ladder) <= 0)[0][0])
        raise ValueError(
            f"temperatures={ladder.tolist()}: expected strictly increasing values, but "
            f"T[{k}]={ladder[k]} >= T[{k + 1}]={ladder[k + 1]}"
        )
    return ladder


def temperature_ladder(t_min: float, t_max: float, n: int, kind: str = "geometric"
                       ) -> np.ndarray:
    """``n`` temperatures from ``t_min`` to ``t_max`` K, (n,) float64.

    ``kind="geometric"`` spaces them by a constant ratio (about equal exchange acceptance
    when the heat capacity is constant), ``"linear"`` by a constant difference.
    """
    if kind not in ("geometric", "linear"):
        raise ValueError(f"kind={kind!r}: expected 'geometric' or 'linear'")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer")
    if n == 1:
        if t_min != t_max:
            raise ValueError(f"n=1 needs t_min == t_max; got t_min={t_min}, t_max={t_max}")
        return check_ladder([t_min])
    if not 0 < t_min < t_max:
        raise ValueError(f"t_min={t_min}, t_max={t_max}: expected 0 < t_min < t_max K")
    if kind == "geometric":
        ladder = t_min * (t_max / t_min) ** (np.arange(n) / (n - 1))
    else:
        ladder = np.linspace(t_min, t_max, n)
    ladder[-1] = t_max  # exact end point despite rounding
    return check_ladder(ladder)


class ReplicaExchange:
    """Temperature-swap state and statistics of a replica-exchange run.

    Parameters
    ----------
    temperatures:
        (K,) K, strictly increasing; one replica per temperature.
    seed:
        Seeds the exchange generator (a stream of the run seed independent of the replicas'
        dynamics streams).

    Attributes
    ----------
    temperature_of_replica:
        (K,) int64, the ladder index each replica is at.
    n_attempts:
        Exchange rounds so far (each over the even or the odd pairs).
    n_proposed, n_accepted:
        (K, K) int64 acceptance matrices over temperature pairs (symmetric; only the
        neighbours ``(k, k+1)`` are ever proposed).
    round_trips:
        (K,) int64, completed trips of each replica from the lowest temperature to the highest
        and back to the lowest.
    """

    def __init__(self, temperatures: Sequence[float] | np.ndarray, seed: int = 0) -> None:
        self.temperatures = check_ladder(temperatures)
        n = self.temperatures.size
        self.betas = 1.0 / (units.kB * self.temperatures)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(replica_seed(seed, 0, EXCHANGE_STREAM))
        self.temperature_of_replica = np.arange(n, dtype=np.int64)
        self.n_attempts = 0
        self.n_proposed = np.zeros((n, n), dtype=np.int64)
        self.n_accepted = np.zeros((n, n), dtype=np.int64)
        self.round_trips = np.zeros(n, dtype=np.int64)
        # Where each replica is on its way round: a round trip ends at the bottom after the
        # top, reached after the bottom.
        self._leg = np.where(self.temperature_of_replica == 0, _HEADING_UP,
                             _NOT_YET_AT_BOTTOM).astype(np.int64)

    @property
    def n_replicas(self) -> int:
        return int(self.temperatures.size)

    @property
    def replica_of_temperature(self) -> np.ndarray:
        """(K,) int64, the replica at each ladder index."""
        return np.argsort(self.temperature_of_replica).astype(np.int64)

    def replica_temperatures(self) -> np.ndarray:
        """(R,) K, the temperature each replica is simulated at now."""
        return self.temperatures[self.temperature_of_replica]

    def acceptance_rates(self) -> np.ndarray:
        """(K-1,) accepted/proposed of each neighbouring pair (NaN before any attempt)."""
        k = np.arange(self.n_replicas - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.n_accepted[k, k + 1] / self.n_proposed[k, k + 1]

    def attempt(self, energies: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One round of swaps between neighbouring temperatures.

        Parameters
        ----------
        energies:
            (R,) eV, potential energy of each replica (indexed by replica, not temperature).

        Returns
        -------
        velocity_scale:
            (R,) factors ``sqrt(T_new / T_old)`` to multiply each replica's velocities by
            (1 for replicas that did not move), so kinetic energy matches the new bath.
        outcome:
            (K-1,) int8 per neighbouring pair: 1 accepted, 0 rejected, -1 not attempted.
        """
        energies = np.asarray(torch.as_tensor(energies, dtype=torch.float64).cpu(), np.float64)
        if energies.shape != (self.n_replicas,):
            raise ValueError(f"energies has shape {energies.shape}; expected ({self.n_replicas},)")
        if not np.all(np.isfinite(energies)):
            raise ValueError(f"energies={energies.tolist()}: expected finite values")
        old = self.temperature_of_replica.copy()
        outcome = np.full(self.n_replicas - 1, -1, dtype=np.int8)
        pairs = np.arange(self.n_attempts % 2, self.n_replicas - 1, 2)
        # One uniform per pair in this round, drawn whatever the outcomes, so the stream
        # advances identically on every process and after a resume.
        uniforms = torch.rand(len(pairs), generator=self.generator, dtype=torch.float64).numpy()
        holder = self.replica_of_temperature
        for k, u in zip(pairs, uniforms, strict=True):
            a, b = holder[k], holder[k + 1]
            log_p = (self.betas[k] - self.betas[k + 1]) * (energies[a] - energies[b])
            accepted = log_p >= 0 or u < np.exp(log_p)
            self.n_proposed[k, k + 1] += 1
            self.n_proposed[k + 1, k] += 1
            outcome[k] = int(accepted)
            if accepted:
                self.n_accepted[k, k + 1] += 1
                self.n_accepted[k + 1, k] += 1
                self.temperature_of_replica[a], self.temperature_of_replica[b] = k + 1, k
        self.n_attempts += 1
        self._count_round_trips()
        scale = np.sqrt(self.temperatures[self.temperature_of_replica] / self.temperatures[old])
        return scale, outcome

    def _count_round_trips(self) -> None:
        top = self.n_replicas - 1
        at_bottom = self.temperature_of_replica == 0
        at_top = self.temperature_of_replica == top
        self.round_trips += at_bottom & (self._leg == _HEADING_DOWN)
        self._leg[at_top & (self._leg == _HEADING_UP)] = _HEADING_DOWN
        self._leg[at_bottom] = _HEADING_UP

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue identically (tensors, for ``torch.save``)."""
        return {
            "temperatures": torch.from_numpy(self.temperatures.copy()),
            "temperature_of_replica": torch.from_numpy(self.temperature_of_replica.copy()),
            "n_attempts": torch.tensor(self.n_attempts),
            "n_proposed": torch.from_numpy(self.n_proposed.copy()),
            "n_accepted": torch.from_numpy(self.n_accepted.copy()),
            "round_trips": torch.from_numpy(self.round_trips.copy()),
            "leg": torch.from_numpy(self._leg.copy()),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; ValueError if it belongs to another ladder."""
        ladder = state["temperatures"].numpy()
        if ladder.shape != self.temperatures.shape or not np.allclose(ladder, self.temperatures):
            raise ValueError(
                f"exchange state is for temperatures {ladder.tolist()}; this run has "
                f"{self.temperatures.tolist()}"
            )
        permutation = state["temperature_of_replica"].numpy().astype(np.int64)
        if sorted(permutation.tolist()) != list(range(self.n_replicas)):
            raise ValueError(f"temperature_of_replica={permutation.tolist()} is no permutation")
        self.temperature_of_replica = permutation.copy()
        self.n_attempts = int(state["n_attempts"])
        self.n_proposed = state["n_proposed"].numpy().astype(np.int64).copy()
        self.n_accepted = state["n_accepted"].numpy().astype(np.int64).copy()
        self.round_trips = state["round_trips"].numpy().astype(np.int64).copy()
        self._leg = state["leg"].numpy().astype(np.int64).copy()
        self.generator.set_state(state["generator"])

    def summary(self) -> dict[str, object]:
        """JSON-ready statistics: ladder, permutation, acceptance matrices, round trips."""
        return {
            "temperatures_K": self.temperatures.tolist(),
            "n_attempts": self.n_attempts,
            "temperature_of_replica": self.temperature_of_replica.tolist(),
            "n_proposed": self.n_proposed.tolist(),
            "n_accepted": self.n_accepted.tolist(),
            "acceptance_neighbours": [
                None if np.isnan(x) else float(x) for x in self.acceptance_rates()
            ],
            "round_trips": self.round_trips.tolist(),
        }
