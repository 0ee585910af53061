"""The full space: the alignment, prompt and translator spaces searched jointly."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces import alignment, prompt, translator

PARAMS = (*alignment.PARAMS, *prompt.PARAMS, *translator.PARAMS)


def define(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest every knob of the three spaces; the returned dict overrides the study's base config."""
    return {**alignment.define(trial), **prompt.define(trial), **translator.define(trial)}
