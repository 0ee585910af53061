"""The full space: the prompt, translator and kl spaces searched jointly (conditional as they are)."""

from __future__ import annotations

from typing import Any, Mapping

import optuna

from search_spaces import kl, prompt, translator


def define(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """Suggest every knob, each only where it does something (the translator's with depth > 0, the alignment
    task's with w > 0). w and depth first: the run names show the first values."""
    weight = kl.suggest_weight(trial)
    depth = translator.suggest_depth(trial)
    prompt.define(trial, base)
    if depth > 0:
        translator.suggest_details(trial)
    if weight > 0:
        kl.suggest_details(trial, base)
