"""Toy potentials for the engine tests: cheap, exact, and independent between replicas."""

from __future__ import annotations

import numpy as np
import torch


class Harmonic:
    """``E = sum_i k_i |x_i - c_i|^2 / 2`` per replica: every atom on its own spring.

    ``centers`` (N, 3) Å, ``k`` eV/Å² (scalar or (N,)). Each Cartesian component is an
    independent harmonic degree of freedom, so ``<PE> = <KE> = 3N kT / 2``.
    """

    def __init__(self, centers: np.ndarray, k: float | np.ndarray = 1.0) -> None:
        self.centers = torch.as_tensor(centers, dtype=torch.float64)
        self.k = torch.as_tensor(k, dtype=torch.float64).reshape(-1, 1)

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = positions - self.centers
        return 0.5 * (self.k * d**2).sum(dim=(1, 2)), -self.k * d


class DoubleWell:
    """``E = sum_i h ((x_i / b)^2 - 1)^2`` per replica, on the x coordinate only (y and z are
    free). ``h`` the barrier in eV, ``b`` the minima's distance from 0 in Å."""

    def __init__(self, h: float = 0.15, b: float = 1.0) -> None:
        self.h, self.b = h, b

    def energy_1d(self, x: np.ndarray) -> np.ndarray:
        return self.h * ((x / self.b) ** 2 - 1.0) ** 2

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = positions[..., 0]
        u = (x / self.b) ** 2 - 1.0
        forces = torch.zeros_like(positions)
        forces[..., 0] = -4.0 * self.h * u * x / self.b**2
        return (self.h * u**2).sum(dim=1), forces


class Faulty:
    """Wraps a potential and corrupts replica ``replica``'s result from call ``after`` on:
    ``mode="nan"`` a NaN energy, ``"force"`` a huge force, ``"jump"`` +1000 eV, ``"raise"``
    a RuntimeError (a crash), ``"worker"`` a WorkerError (a worker process died)."""

    def __init__(self, inner, after: int, replica: int = 0, mode: str = "nan") -> None:
        self.inner, self.after, self.replica, self.mode = inner, after, replica, mode
        self.calls = 0

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        energies, forces = self.inner.evaluate(positions)
        if self.calls > self.after:
            if self.mode == "raise":
                raise RuntimeError(f"simulated crash at call {self.calls}")
            if self.mode == "worker":
                from freecg_md.md.worker_processes import WorkerError

                raise WorkerError("worker 1 exited with code -9")
            energies, forces = energies.clone(), forces.clone()
            if self.mode == "nan":
                energies[self.replica] = float("nan")
            elif self.mode == "jump":
                energies[self.replica] += 1e3
            else:
                forces[self.replica, 0, 0] = 5e3
        return energies, forces


class BondedChain:
    """``E = sum_b k (|x_{b+1} - x_b| - r0)^2 / 2``: atoms bonded in a chain by springs.

    Stiff springs between light atoms vibrate fast enough that a long time step makes the
    dynamics unstable while the energy stays finite, as a molecule's X-H bonds do.
    """

    def __init__(self, k: float = 30.0, r0: float = 1.0) -> None:
        self.k, self.r0 = k, r0

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = positions.detach().clone().requires_grad_(True)
        bonds = torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1)
        energies = 0.5 * self.k * ((bonds - self.r0) ** 2).sum(dim=1)
        (gradient,) = torch.autograd.grad(energies.sum(), x)
        return energies.detach(), -gradient
