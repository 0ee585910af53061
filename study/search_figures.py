"""The search's figures in a study's report: the objective of every trial against each searched hyperparameter,
and Optuna's parameter importances (computed here too, with too few trials none)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: studies run on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from study.optuna_storage import MIN_TRIALS_FOR_IMPORTANCE, SearchedParameters  # noqa: E402
from study.results import TrialRow  # noqa: E402


def plot_objective_vs(
    path: Path, param: str, rows: Sequence[TrialRow], distribution, objective: str, searched: SearchedParameters
) -> None:
    """The objective of every complete trial that searched one hyperparameter against its value (references
    marked; in a conditional space a trial may not have searched it)."""
    figure, axes = plt.subplots(figsize=(5, 3.5))
    choices = getattr(distribution, "choices", None)
    for is_reference, colour, label in ((False, "tab:blue", "searched"), (True, "tab:orange", "reference")):
        chosen = [r for r in rows if bool(r.reference) == is_reference and param in searched.of(r.trial_number)]
        if not chosen:
            continue
        values = [searched.of(r.trial_number)[param] for r in chosen]
        xs = [choices.index(v) for v in values] if choices else values
        axes.scatter(xs, [100 * r.objective for r in chosen], c=colour, label=label, alpha=0.8)
    if choices:
        axes.set_xticks(range(len(choices)), [str(c) for c in choices])
    elif getattr(distribution, "log", False):
        axes.set_xscale("log")
    axes.set_xlabel(param)
    axes.set_ylabel(f"objective: {objective} (%)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parameter_importances(searched: SearchedParameters) -> dict[str, float] | None:
    """Optuna's importances of the searched parameters over the study's complete trials, or None with too few.

    Optuna's default evaluator, PED-ANOVA (conditional: a trial that did not search a parameter, a depth-0
    trial's translator width say, still counts for the parameters it did search); pruned trials, stopped
    early, are left out, as Optuna's importances leave them."""
    if searched.study is None:
        return None
    done = searched.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or len({p for t in done for p in t.params}) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notes
        return optuna.importance.get_param_importances(searched.study)


def plot_importances(path: Path, importances: dict[str, float]) -> None:
    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(5, 0.5 * len(names) + 1.5))
    axes.barh(names, [importances[n] for n in names])
    axes.set_xlabel("importance (PED-ANOVA)")
    axes.set_title("Optuna parameter importances")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
