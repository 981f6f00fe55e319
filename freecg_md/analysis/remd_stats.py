"""Replica-exchange diagnostics from the history of which replica held which temperature."""

from __future__ import annotations

import numpy as np

__all__ = ["acceptance_per_pair", "check_index", "check_permutations", "exchange_counts",
           "frames_at_temperature", "round_trips"]


def check_permutations(name: str, history: np.ndarray) -> np.ndarray:
    """``history`` (A, R) as int64, or a ValueError unless every row is a permutation of
    ``0..R-1`` (each temperature held by exactly one replica)."""
    array = np.asarray(history)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}; expected a non-empty (A, R) array")
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise ValueError(f"{name} holds non-integer, NaN or infinite values; expected "
                         "temperature indices")
    array = array.astype(np.int64)
    valid = np.all(np.sort(array, axis=1) == np.arange(array.shape[1]), axis=1)
    if not valid.all():
        row = int(np.argmin(valid))
        raise ValueError(f"{name} row {row} is {array[row].tolist()}, not a permutation of "
                         f"0..{array.shape[1] - 1}")
    return array


def frames_at_temperature(state_of_replica: np.ndarray, temperature_index: int) -> np.ndarray:
    """Which replica held temperature ``k`` at each saved frame.

    ``state_of_replica`` (F, R): the temperature index of every replica at every frame.
    Returns (F,) replica indices: frame ``f`` of the constant-temperature trajectory is frame
    ``f`` of replica ``result[f]``'s trajectory (demultiplexing).
    """
    states = check_permutations("state_of_replica", state_of_replica)
    check_index("temperature_index", temperature_index, states.shape[1])
    return np.argmax(states == temperature_index, axis=1)


def check_index(name: str, value: int, count: int, detail: str = "") -> None:
    """ValueError naming ``name`` unless ``value`` is an integer from 0 to ``count - 1`` (a
    replica or a rung of the ladder): numpy would take -1 as the last, and an index that
    matches no replica as replica 0. ``detail`` is added to the message."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not (
            0 <= value < count):
        raise ValueError(f"{name}={value!r}: expected 0 to {count - 1}{detail}")


def acceptance_per_pair(state_history: np.ndarray) -> np.ndarray:
    """Acceptance rate per neighbouring pair ``(k, k+1)`` from consecutive permutations,
    (R-1,); NaN for a pair never attempted. See :func:`exchange_counts`."""
    accepted, attempted = exchange_counts(state_history)
    with np.errstate(invalid="ignore"):
        return accepted / attempted


def exchange_counts(state_history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accepted and attempted exchanges per neighbouring pair ``(k, k+1)``, each (R-1,).

    ``state_history`` (A+1, R): the temperature index of each replica before the first
    attempt and after each of A attempts. Attempts alternate even pairs (0,1),(2,3)... and
    odd pairs, starting with even; a pair's attempt is accepted when the replicas at ``k``
    and ``k+1`` changed places.
    """
    history = check_permutations("state_history", state_history)
    if len(history) < 2:
        raise ValueError("state_history has one row; expected the permutation before the "
                         "first attempt and after at least one")
    n_temps = history.shape[1]
    accepted = np.zeros(n_temps - 1, dtype=np.int64)
    attempted = np.zeros(n_temps - 1, dtype=np.int64)
    for attempt in range(1, len(history)):
        before = np.argsort(history[attempt - 1])  # replica at each temperature
        after = np.argsort(history[attempt])
        for k in range((attempt - 1) % 2, n_temps - 1, 2):
            attempted[k] += 1
            accepted[k] += before[k] == after[k + 1] and before[k + 1] == after[k]
    return accepted, attempted


def round_trips(state_history: np.ndarray) -> np.ndarray:
    """Completed round trips per replica, (R,): from the lowest temperature to the highest
    and back to the lowest. ``state_history`` (A, R) temperature indices over time."""
    history = check_permutations("state_history", state_history)
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
