"""The prompt space: soft-prompt length, its initialisation and the learning rate."""

from __future__ import annotations

from typing import Any

import optuna

PARAMS = ("prompt_length", "prompt_init", "learning_rate")


def define(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the prompt knobs; the returned dict overrides the study's base config."""
    return {
        # log scale: going from 4 to 8 tokens matters as much as going from 32 to 64
        "prompt_length": trial.suggest_int("prompt_length", 4, 64, log=True),
        "prompt_init": trial.suggest_categorical("prompt_init", ["vocab", "normal"]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True),
    }
