"""The study's Optuna searcher (TPE, multivariate, seeded, reference points first) and scheduler."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SearchSpace, reference_points

from study.settings import SCHEDULERS

METRIC, MODE = "objective", "max"


@dataclass
class SpaceWithReferences:
    """The define-by-run function handed to `OptunaSearch`.

    Optuna pops the enqueued `points_to_evaluate` first, as trials 0, 1, ...; for those it returns the
    searched values of the point itself and here we add the reference's values of fields the space
    does not search (the translator depth in the alignment space, for example) and its name. Every
    trial also carries its Optuna number, which names its MLflow run. A picklable object rather
    than a closure, because Tune saves the searcher in its experiment state for resume.
    """

    space: SearchSpace
    references: dict[str, dict[str, Any]]  # name -> point, in evaluation order

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        searched = self.space.define(trial)
        extra: dict[str, Any] = {"trial_number": trial.number}
        names = list(self.references)
        if trial.number < len(names):
            name = names[trial.number]
            extra["reference"] = name
            extra.update({k: v for k, v in self.references[name].items() if k not in searched})
        return extra

    @property
    def points(self) -> list[dict[str, Any]]:
        """The reference points restricted to the searched parameters (what Optuna enqueues)."""
        return [{k: v for k, v in point.items() if k in self.space.params} for point in self.references.values()]


def make_searcher(space: SearchSpace, base_config: dict[str, Any], seed: int, num_samples: int) -> OptunaSearch:
    """OptunaSearch over `space` with a seeded multivariate TPE sampler; reference points run first."""
    function = SpaceWithReferences(space, reference_points(space, base_config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate is "experimental"
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True,
            # random start-up trials: Optuna's 10 would leave a 12-trial study almost no TPE trials
            n_startup_trials=max(2, min(10, num_samples // 3)))
    return OptunaSearch(space=function, metric=METRIC, mode=MODE, points_to_evaluate=function.points,
                        sampler=sampler)


class FixedConfigs(Searcher):
    """Runs exactly the given trial configs, in order, then finishes (the confirmation reruns).

    Tune's BasicVariantGenerator only evaluates points whose keys its param space defines; these
    configs are whole trial configs whose keys differ from one configuration to the next.
    """

    def __init__(self, configs: Sequence[dict[str, Any]]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.configs = [dict(c) for c in configs]
        self.next_index = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.next_index >= len(self.configs):
            return Searcher.FINISHED
        self.next_index += 1
        return dict(self.configs[self.next_index - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the configs are fixed

    def save(self, checkpoint_path: str) -> None:  # Tune saves it with the experiment state, for resume
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"configs": self.configs, "next_index": self.next_index}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.configs, self.next_index = state["configs"], state["next_index"]


class ReferencePreservingASHA(ASHAScheduler):
    """ASHA that never stops a reference trial early: the report needs the baselines' test accuracy."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get("reference"):
            return TrialScheduler.CONTINUE
        return decision


def trial_dirname(trial) -> str:
    """Short trial folders (Tune's default packs every value into the name): trainable and trial id."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def make_scheduler(name: str, epochs: int) -> TrialScheduler:
    if name == "none":
        return FIFOScheduler()
    if name == "asha":
        # one report per epoch; rungs at 1, 2, 4, ... epochs, halving the trials at each
        return ReferencePreservingASHA(time_attr="training_iteration", metric=METRIC, mode=MODE, max_t=epochs,
                                       grace_period=1, reduction_factor=2)
    raise ValueError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
