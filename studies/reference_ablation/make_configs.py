"""Write the training configs of the ablation of FreeCG's published choices (issue: where
we differ from the authors' code): the shipped model's size and training recipe, one
shared split of one data set, the same budget in optimiser steps, seeds 0 and 1, and one
change per variant against our defaults. Run from anywhere; writes ./configs/*.json."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "ours": {},
    "self_loops": {"self_loops": True},
    "edge_dot": {"edge_update": "dot"},
    "enhancer_max": {"enhancer": "max"},
    "authors": {"self_loops": True, "vector_message_cutoff": False, "edge_update": "dot",
                "init": "reference", "head_norm_epsilon": 0.0},
    "no_group_cg": {"use_group_cg": False},
    "init_reference": {"init": "reference"},
    "no_vector_cutoff": {"vector_message_cutoff": False},
}
SEEDS = (0, 1)
SHIPPED_SIZE = {"hidden": 64, "num_layers": 3, "num_heads": 4, "num_groups": 8,
                "cutoff": 5.0}


def config(variant: str, seed: int) -> dict:
    return {
        "data": ["../../../data/chignolin/labelled"],
        "output_dir": f"../run/{variant}_s{seed}",
        "model": {**SHIPPED_SIZE, **VARIANTS[variant]},
        "energy_weight": 0.05,
        "force_weight": 0.95,
        "lr": 1e-3,
        "batch_size": 4,
        "warmup_steps": 50,
        "plateau_factor": 0.8,
        "plateau_patience": 5,
        "min_lr": 1e-6,
        "ema_decay": 0.99,
        "max_epochs": 1,
        "checkpoint_every": 50,
        "max_structures": 800,
        "val_fraction": 0.1,
        "test_fraction": 0.05,
        "seed": seed,
        "split_seed": 0,
        "dtype": "float32",
        "num_threads": 1,
    }


def main() -> None:
    out = HERE / "configs"
    out.mkdir(exist_ok=True)
    for variant in VARIANTS:
        for seed in SEEDS:
            path = out / f"{variant}_s{seed}.json"
            path.write_text(json.dumps(config(variant, seed), indent=2) + "\n")


if __name__ == "__main__":
    main()
