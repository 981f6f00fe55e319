"""Checkpoints of a replica run: everything needed to continue it bit for bit.

A checkpoint holds the positions, velocities, forces and energies of every replica (the
forces so the first step after a resume needs no extra evaluation), the state of every
replica's generator and of the exchange (permutation, acceptance matrices, round trips,
generator), the step, the number of frames on disk per trajectory and the run config. It is
written to a temporary file and moved over the old one with ``os.replace``, so a crash
leaves either the previous checkpoint or the new one, never half of one. It loads with
``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "CheckpointError", "load_checkpoint",
           "merge_replica_parts", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
# Fields a resumed run may change: how long it runs, the guards' thresholds (they stop a run
# but never change its trajectory), when it writes checkpoints and frames, and whether
# velocities are drawn at the start (a resume takes them from the checkpoint; the start a
# command names, which decides this, may differ and is then not used). The run directory is
# not compared: the checkpoint was found in it, moved or not.
RESUMABLE_CHANGES = ("n_steps", "output_dir", "max_force", "max_energy_jump_per_atom",
                     "max_temperature_ratio", "temperature_window", "max_bond_stretch",
                     "min_bond_compression", "max_displacement", "max_force_disagreement",
                     "allow_long_timestep", "checkpoint_interval", "flush_every",
                     "draw_velocities")


def _compared(key: str, value: Any) -> Any:
    """A config value as resuming compares it: a device by its kind, since each process of
    a multi-GPU run records its own ``cuda:<rank>`` and a run may resume on other GPUs."""
    if key == "device" and value is not None:
        return torch.device(value).type
    return value


class CheckpointError(ValueError):
    """A checkpoint file is missing parts, inconsistent, or belongs to another run."""


@dataclass
class Checkpoint:
    """The saved state of a run (all replicas, global order).

    Attributes
    ----------
    step:
        Steps completed.
    positions, velocities, forces:
        (R, N, 3) float64: Å, Å/fs, eV/Å.
    energies:
        (R,) float64 eV, at ``positions``.
    numbers:
        (N,) int64 atomic numbers (checked on resume).
    generator_states:
        R uint8 tensors from ``torch.Generator.get_state()``, replica order.
    exchange:
        :meth:`ReplicaExchange.state_dict` or None for a run without exchanges.
    frames_written:
        (R,) frames on disk in each replica's trajectory.
    config:
        The run config as a dict (:meth:`RunConfig.to_dict`).
    masses:
        (N,) float64 amu, the atoms' masses as integrated (after any hydrogen mass
        repartitioning; checked on resume), or None in checkpoints that predate it.
    """

    step: int
    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    energies: torch.Tensor
    numbers: torch.Tensor
    generator_states: list[torch.Tensor]
    exchange: dict[str, torch.Tensor] | None
    frames_written: list[int]
    config: dict[str, Any]
    masses: torch.Tensor | None = None

    def validate(self, source: str = "checkpoint") -> None:
        """CheckpointError naming ``source`` unless the parts fit together."""
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise CheckpointError(f"{source}: positions has shape {tuple(self.positions.shape)};"
                                  " expected (R, N, 3)")
        n_replicas, n_atoms = self.positions.shape[:2]
        shapes = {
            "velocities": (self.velocities.shape, (n_replicas, n_atoms, 3)),
            "forces": (self.forces.shape, (n_replicas, n_atoms, 3)),
            "energies": (self.energies.shape, (n_replicas,)),
            "numbers": (self.numbers.shape, (n_atoms,)),
        }
        for name, (shape, expected) in shapes.items():
            if tuple(shape) != expected:
                raise CheckpointError(f"{source}: {name} has shape {tuple(shape)}; expected "
                                      f"{expected}")
        for name in ("positions", "velocities", "forces", "energies"):
            if not bool(torch.all(torch.isfinite(getattr(self, name)))):
                raise CheckpointError(f"{source}: {name} has NaN or infinite values")
        if len(self.generator_states) != n_replicas:
            raise CheckpointError(f"{source}: {len(self.generator_states)} generator states "
                                  f"for {n_replicas} replicas")
        if len(self.frames_written) != n_replicas or min(self.frames_written) < 0:
            raise CheckpointError(f"{source}: frames_written={self.frames_written}; expected "
                                  f"{n_replicas} counts >= 0")
        if self.step < 0:
            raise CheckpointError(f"{source}: step={self.step}; expected >= 0")
        if self.masses is not None and tuple(self.masses.shape) != (n_atoms,):
            raise CheckpointError(f"{source}: masses has shape {tuple(self.masses.shape)}; "
                                  f"expected ({n_atoms},)")

    def check_matches(self, config: dict[str, Any], numbers: torch.Tensor,
                      masses: torch.Tensor | None = None) -> None:
        """CheckpointError unless this checkpoint belongs to a run with ``config`` (up to
        ``n_steps``), atomic numbers ``numbers`` and, where both are known, atomic masses
        ``masses`` (amu)."""
        differing = sorted(
            key for key in set(config) | set(self.config)
            if key not in RESUMABLE_CHANGES
            and _compared(key, config.get(key)) != _compared(key, self.config.get(key))
        )
        if differing:
            details = ", ".join(f"{k}: saved {self.config.get(k)!r}, now {config.get(k)!r}"
                                for k in differing)
            raise CheckpointError(f"the checkpoint belongs to another run config ({details})")
        if not torch.equal(self.numbers.cpu(), torch.as_tensor(numbers).cpu().long()):
            raise CheckpointError("the checkpoint's atomic numbers differ from the system's")
        if masses is not None and self.masses is not None:
            saved = self.masses.cpu().double()
            now = torch.as_tensor(masses).cpu().double()
            if saved.shape != now.shape or not torch.allclose(saved, now, rtol=1e-9, atol=0.0):
                # Resuming with other masses would continue another system's dynamics; the
                # usual cause is a different --hydrogen-mass.
                detail = ""
                if saved.shape == now.shape:
                    hydrogen = self.numbers.cpu() == 1
                    if not torch.allclose(saved[hydrogen], now[hydrogen], rtol=1e-9, atol=0.0):
                        detail = (f" (hydrogens: saved {_mass_range(saved[hydrogen])} amu, now "
                                  f"{_mass_range(now[hydrogen])} amu)")
                    else:
                        atom = int(torch.nonzero(~torch.isclose(saved, now, rtol=1e-9,
                                                                atol=0.0))[0])
                        detail = (f" (atom {atom}: saved {float(saved[atom]):.6g} amu, now "
                                  f"{float(now[atom]):.6g} amu)")
                raise CheckpointError("the checkpoint's atomic masses differ from the run's"
                                      f"{detail}; resume with the masses the run started with "
                                      "(e.g. the same --hydrogen-mass)")
        if config.get("n_steps", self.step) < self.step:
            raise CheckpointError(f"n_steps={config['n_steps']} is less than the checkpoint's "
                                  f"step {self.step}")


def _mass_range(masses: torch.Tensor) -> str:
    low, high = float(masses.min()), float(masses.max())
    return f"{low:.4g}" if low == high else f"{low:.4g}-{high:.4g}"


def merge_replica_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-process blocks, in rank order, of replica tensors (R_i, ...) and of
    lists (``generators``) into the global order."""
    merged: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, list):
            merged[key] = [item for part in parts for item in part[key]]
        else:
            merged[key] = torch.cat([part[key] for part in parts])
    return merged


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file + ``os.replace``)."""
    checkpoint.validate()
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "step": int(checkpoint.step),
        "positions": checkpoint.positions.detach().cpu(),
        "velocities": checkpoint.velocities.detach().cpu(),
        "forces": checkpoint.forces.detach().cpu(),
        "energies": checkpoint.energies.detach().cpu(),
        "numbers": checkpoint.numbers.detach().cpu(),
        "generator_states": [state.cpu() for state in checkpoint.generator_states],
        "exchange": checkpoint.exchange,
        "frames_written": [int(n) for n in checkpoint.frames_written],
        "config": checkpoint.config,
    }
    if checkpoint.masses is not None:
        payload["masses"] = checkpoint.masses.detach().cpu().double()
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which
        raise CheckpointError(f"{path} is not a readable checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path}: format_version={version!r}; expected {FORMAT_VERSION}")
    fields = ("step", "positions", "velocities", "forces", "energies", "numbers",
              "generator_states", "exchange", "frames_written", "config")
    missing = [name for name in fields if name not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")
    checkpoint = Checkpoint(**{name: payload[name] for name in fields},
                            masses=payload.get("masses"))
    checkpoint.validate(str(path))
    return checkpoint
