"""The kl space: the alignment task's details (w; with w > 0 KL temperature, pairs, stop-gradient, CE-only epochs).

Searches the alignment weight w and, where w > 0 gives them something to do, the KL temperature, the parallel
pairs per step, whether gradients flow through the teacher (English) side of the KL, and the CE-only epochs
before the alignment task starts.

CE-only epochs of 0 are the paper's summaries (joint training from the start); more are its abstract's two
stages (train the source prompt, then translate it). They range up to one less than the study's epochs, so
that the alignment task always runs for at least one epoch.
"""

from __future__ import annotations

from typing import Any, Mapping

import optuna


def suggest_weight(trial: optuna.Trial) -> float:
    return trial.suggest_float("alignment_weight", 0.0, 1.0)


def suggest_details(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """The knobs of an alignment task that runs (w > 0); without it they would do nothing."""
    trial.suggest_float("kl_temperature", 0.5, 4.0, log=True)
    trial.suggest_categorical("alignment_batch_size", [4, 8, 16])
    trial.suggest_categorical("teacher_stop_gradient", [True, False])
    epochs = int(base["epochs"])
    if epochs > 1:  # with one epoch the only choice is 0: nothing to search
        trial.suggest_int("ce_only_epochs", 0, epochs - 1)


def define(trial: optuna.Trial, base: Mapping[str, Any]) -> None:
    """Suggest w, and the alignment details where w > 0 gives them something to do."""
    if suggest_weight(trial) > 0:
        suggest_details(trial, base)
