"""The alignment space: how strongly and how the target-language prompts are pulled to the source.

Searches the alignment weight w (0 = no alignment task), the KL temperature, the number of parallel
pairs per step and whether gradients flow through the source (teacher) side of the KL.
"""

from __future__ import annotations

from typing import Any

import optuna

PARAMS = ("alignment_weight", "kl_temperature", "alignment_batch_size", "teacher_stop_gradient")


def define(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the alignment knobs; the returned dict overrides the study's base config."""
    return {
        "alignment_weight": trial.suggest_float("alignment_weight", 0.0, 1.0),
        "kl_temperature": trial.suggest_float("kl_temperature", 0.5, 4.0, log=True),
        "alignment_batch_size": trial.suggest_categorical("alignment_batch_size", [4, 8, 16]),
        "teacher_stop_gradient": trial.suggest_categorical("teacher_stop_gradient", [True, False]),
    }
