"""The translator space: the network that maps the source prompt to each target language's prompt.

Depth 0 is the identity (vanilla prompt transfer); the hidden size, residual connection and
whether one translator is shared by all languages or each language has its own.
"""

from __future__ import annotations

from typing import Any

import optuna

PARAMS = ("translator_depth", "translator_hidden", "translator_residual", "translator_mode")


def define(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the translator knobs; the returned dict overrides the study's base config."""
    return {
        "translator_depth": trial.suggest_int("translator_depth", 0, 4),
        "translator_hidden": trial.suggest_categorical("translator_hidden", [64, 128, 256, 512]),
        "translator_residual": trial.suggest_categorical("translator_residual", [False, True]),
        "translator_mode": trial.suggest_categorical("translator_mode", ["shared", "per_language"]),
    }
