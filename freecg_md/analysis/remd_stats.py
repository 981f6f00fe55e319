"""Replica-exchange diagnostics from the history of which replica held which temperature."""

from __future__ import annotations

import numpy as np

__all__ = ["acceptance_per_pair", "frames_at_temperature", "round_trips"]


def frames_at_temperature(state_of_replica: np.ndarray, temperature_index: int) -> np.ndarray:
    """Which replica held temperature ``k`` at each saved frame.

    ``state_of_replica`` (F, R): the temperature index of every replica at every frame.
    Returns (F,) replica indices: frame ``f`` of the constant-temperature trajectory is frame
    ``f`` of replica ``result[f]``'s trajectory (demultiplexing).
    """
    states = np.asarray(state_of_replica)
    hits = states == temperature_index
    if not np.all(hits.sum(axis=1) == 1):
        raise ValueError(f"every frame must have exactly one replica at temperature "
                         f"{temperature_index}; state_of_replica is not a permutation per row")
    return np.argmax(hits, axis=1)


def acceptance_per_pair(state_history: np.ndarray, pair_attempts: np.ndarray | None = None
                        ) -> np.ndarray:
    """Acceptance rate per neighbouring pair ``(k, k+1)`` from consecutive permutations.

    ``state_history`` (A+1, R): the temperature index of each replica before the first
    attempt and after each of A attempts. Attempts alternate even pairs (0,1),(2,3)... and
    odd pairs, starting with even; a pair's attempt is accepted when the replicas at ``k``
    and ``k+1`` changed places.
    """
    history = np.asarray(state_history)
    n_temps = history.shape[1]
    accepted = np.zeros(n_temps - 1)
    attempted = np.zeros(n_temps - 1)
    for attempt in range(1, len(history)):
        before = np.argsort(history[attempt - 1])  # replica at each temperature
        after = np.argsort(history[attempt])
        for k in range((attempt - 1) % 2, n_temps - 1, 2):
            attempted[k] += 1
            accepted[k] += before[k] == after[k + 1] and before[k + 1] == after[k]
    with np.errstate(invalid="ignore"):
        return accepted / attempted


def round_trips(state_history: np.ndarray) -> np.ndarray:
    """Completed round trips per replica, (R,): from the lowest temperature to the highest
    and back to the lowest. ``state_history`` (A, R) temperature indices over time."""
    history = np.asarray(state_history)
    top = history.shape[1] - 1
    counts = np.zeros(history.shape[1], dtype=int)
    for r in range(history.shape[1]):
        phase = "start"  # "up" once at the bottom, "down" once at the top after that
        for state in history[:, r]:
            if state == 0:
                counts[r] += phase == "down"
                phase = "up"
            elif state == top and phase == "up":
                phase = "down"
    return counts
