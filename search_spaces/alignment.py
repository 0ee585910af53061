"""The alignment space (the design card's): prompt length, alignment weight w and translator depth.

The other translator and alignment knobs stay at the base config's values; the `kl` and `translator` spaces
search those, the `full` space everything.
"""

from __future__ import annotations

from typing import Any, Mapping

import optuna

from search_spaces import kl, prompt, translator


def define(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """Suggest w, the translator depth and the prompt length (each matters in every trial)."""
    kl.suggest_weight(trial)
    translator.suggest_depth(trial)
    prompt.suggest_length(trial)
