"""The prompt space: soft-prompt length, its initialisation and the learning rate."""

from __future__ import annotations

from typing import Any, Mapping

import optuna


def suggest_length(trial: optuna.Trial) -> int:
    # log scale: going from 4 to 8 tokens matters as much as going from 32 to 64
    return trial.suggest_int("prompt_length", 4, 64, log=True)


def define(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """Suggest the prompt knobs on `trial` (every one matters in every trial)."""
    suggest_length(trial)
    trial.suggest_categorical("prompt_init", ["vocab", "normal"])
    trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
