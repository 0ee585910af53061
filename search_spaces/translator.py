"""The translator space: the network that maps the source prompt to each target language's prompt.

The depth (0 is the identity: vanilla prompt transfer) and, for a real translator (depth > 0) only, the
hidden size, the residual connection and whether one translator is shared by all languages or each
language has its own.
"""

from __future__ import annotations

from typing import Any, Mapping

import optuna


def suggest_depth(trial: optuna.Trial) -> int:
    return trial.suggest_int("translator_depth", 0, 4)


def suggest_details(trial: optuna.Trial) -> None:
    """The knobs of a translator with at least one block (an identity has none of them)."""
    trial.suggest_categorical("translator_hidden", [64, 128, 256, 512])
    trial.suggest_categorical("translator_residual", [False, True])
    trial.suggest_categorical("translator_mode", ["shared", "per_language"])


def define(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """Suggest the depth, and the other translator knobs where the depth gives them something to do."""
    if suggest_depth(trial) > 0:
        suggest_details(trial)
