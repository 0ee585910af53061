"""The study's Optuna searcher (TPE, multivariate, seeded, reference points first), its Optuna storage, and the
schedulers.

The searcher keeps the study's Optuna trials in an Optuna storage (`study.optuna_storage`), as an Optuna study
named after the study, which Optuna's own tools read (`optuna.load_study`, `optuna-dashboard`). Only the
driver writes to it. A trial that
ASHA stops early is told to Optuna as PRUNED (its intermediate values, one per epoch, are reported as they
come), as Optuna's own pruning protocol does; Ray's `OptunaSearch` would tell it COMPLETE.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import REFERENCE_POINTS, SearchSpace, reference_points

from study.optuna_storage import open_storage
from study.settings import SCHEDULERS, StudyError

METRIC, MODE = "objective", "max"
logger = logging.getLogger(__name__)


# --- the search space as Optuna sees it -----------------------------------------------------------------

@dataclass
class SpaceWithReferences:
    """The define-by-run function handed to `OptunaSearch`: the space suggests, Optuna records.

    Optuna pops the enqueued `points_to_evaluate` first, as trials 0, 1, ...; what the space suggests for those
    is the reference's values. Here we add only what the space does not suggest: the reference's fixed values
    of fields it does not search (the translator depth in the kl space, for example), its name, and every
    trial's Optuna number, which names its MLflow run. `OptunaSearch` puts the suggested values in the trial's
    config as suggested; nothing here rewrites one. A picklable object rather than a closure, because Tune
    saves the searcher in its experiment state for resume.
    """

    space: SearchSpace
    base: dict[str, Any]  # the study's base config: ranges may depend on it
    references: dict[str, dict[str, Any]]  # name -> the values Optuna enqueues, in evaluation order

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        self.space.define(trial, self.base)
        extra: dict[str, Any] = {"trial_number": trial.number}
        names = list(self.references)
        if trial.number < len(names):
            name = names[trial.number]
            extra["reference"] = name
            extra.update({k: v for k, v in REFERENCE_POINTS[name].items() if k not in trial.params})
        return extra

    @property
    def points(self) -> list[dict[str, Any]]:
        return [dict(point) for point in self.references.values()]


# --- the searcher ---------------------------------------------------------------------------------------

class StudySearcher(OptunaSearch):
    """`OptunaSearch` with the study kept in an Optuna storage, early-stopped trials told as PRUNED, and a
    resume that continues the same Optuna trials.

    Tune saves the searcher with its experiment state now and then; after a driver kill it resumes from the
    last save, while the storage holds every trial Optuna was told of. The saved state is therefore only the
    sampler and which Tune trial is which Optuna trial; the rest is read back from the storage: trials
    finished since the save are not told again, and a trial asked for since the save (one Tune forgot) is
    handed out again, with its suggested values, to the next trial Tune asks for instead of a new one.
    """

    def __init__(self, function: SpaceWithReferences, *, storage_url: str, study_name: str,
                 sampler: optuna.samplers.BaseSampler, epochs: int, resume: bool) -> None:
        self._storage_url, self._epochs, self._resume = storage_url, epochs, resume
        self._numbers: dict[str, int] | None = None  # Tune trial id -> Optuna trial number; None: no study yet
        self._orphans: list[int] = []  # Optuna trials asked for since Tune's last save (it forgot them)
        self._steps: dict[str, set[int]] = {}  # Tune trial id -> the steps its Optuna trial has values for
        super().__init__(space=function, metric=METRIC, mode=MODE, points_to_evaluate=function.points,
                         sampler=sampler, study_name=study_name)

    def _setup_study(self, mode) -> None:
        pass  # the study is set up on first use (connect): a resumed searcher must not create one

    def connect(self) -> optuna.Study:
        """The Optuna study in its storage: created (with the reference points enqueued) for a new Tune
        experiment, loaded and matched with the saved state for a restored one."""
        if self._ot_study is not None:
            return self._ot_study
        storage = open_storage(self._storage_url)
        exists = self._study_name in optuna.study.get_all_study_names(storage)
        if self._numbers is None:
            if exists and not self._resume:
                raise StudyError(f"the Optuna storage {self._storage_url!r} already has a study "
                                 f"{self._study_name!r}: choose another --name, or another --optuna-storage")
            if exists:  # Tune saved nothing before the interruption: its experiment, and our study, start over
                optuna.delete_study(study_name=self._study_name, storage=storage)
            study = optuna.create_study(storage=storage, sampler=self._sampler, pruner=optuna.pruners.NopPruner(),
                                        study_name=self._study_name, direction="maximize")
            for point in self._points_to_evaluate:
                study.enqueue_trial(point)
            self._numbers = {}
        elif not exists:
            raise StudyError(f"the Optuna storage {self._storage_url!r} has lost study {self._study_name!r} that "
                             f"this study's saved state refers to: restore the storage, or start a new study")
        else:
            study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=self._sampler,
                                      pruner=optuna.pruners.NopPruner())
        self._ot_study = study
        self._match_storage(study)
        return study

    def _match_storage(self, study: optuna.Study) -> None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for trial_id, number in self._numbers.items():
            if number not in trials:
                raise StudyError(f"Optuna study {self._study_name!r} in {self._storage_url!r} has no trial "
                                 f"{number}, which Tune's saved state names: the storage is not this study's")
            self._bind(trial_id, trials[number])
        known = set(self._numbers.values())
        self._orphans = [n for n, t in sorted(trials.items()) if n not in known and t.state != TrialState.WAITING]

    def _bind(self, trial_id: str, frozen: optuna.trial.FrozenTrial) -> None:
        self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
        self._steps[trial_id] = set(frozen.intermediate_values)
        if frozen.state.is_finished():
            self._completed_trials.add(trial_id)  # told before the interruption: not told again

    def suggest(self, trial_id: str) -> dict | None:
        study = self.connect()
        if trial_id not in self._ot_trials and self._orphans:
            number = self._orphans.pop(0)
            self._bind(trial_id, next(t for t in study.get_trials(deepcopy=False) if t.number == number))
        config = super().suggest(trial_id)
        self._numbers[trial_id] = self._ot_trials[trial_id].number
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.connect()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or self.metric not in result:
            return
        step = _epoch(result)
        if step in self._steps.setdefault(trial_id, set()):
            return  # an epoch redone after an interruption: Optuna keeps its first value
        self._ot_trials[trial_id].report(float(result[self.metric]), step)
        self._steps[trial_id].add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        study = self.connect()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and not error:
            self.on_trial_result(trial_id, result)  # Tune hands a trial's last result to this call alone
        value = (result or {}).get(self.metric)
        if error or (value is not None and not math.isfinite(value)):
            state, value = TrialState.FAIL, None
        elif value is None or self.stopped_early(result):
            state, value = TrialState.PRUNED, None  # Optuna takes the last intermediate value as its value
        else:
            state = TrialState.COMPLETE
        try:
            study.tell(self._ot_trials[trial_id], value, state=state)
        except (ValueError, RuntimeError) as err:  # the study goes on; what Optuna refused is in the driver's log
            logger.warning("Optuna did not record trial %s as %s: %s", self._numbers.get(trial_id), state.name,
                           err)
        self._completed_trials.add(trial_id)

    def stopped_early(self, result: Mapping[str, Any]) -> bool:
        """Whether the trial ended before its last planned epoch (a scheduler stopped it)."""
        return _epoch(result) < int(result.get("planned_epochs", self._epochs))

    def __getstate__(self) -> dict:
        # the storage and its trials are read back on connect; pickling them would save a stale copy
        state = self.__dict__.copy()
        state.update(_ot_study=None, _ot_trials={}, _orphans=[], _steps={})
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)  # Tune's state at its last save; connect() matches it with the storage
        self._ot_study, self._ot_trials, self._orphans, self._steps = None, {}, [], {}


def _epoch(result: Mapping[str, Any]) -> int:
    return int(result.get("epoch") or result.get("training_iteration") or 0)


def make_searcher(space: SearchSpace, base_config: dict[str, Any], seed: int, num_samples: int, *,
                  storage_url: str, study_name: str, resume: bool = False) -> StudySearcher:
    """The study's searcher over `space`: seeded multivariate TPE, reference points first. A new study's Optuna
    study is created now, so that a storage problem stops the study before its trials start."""
    function = SpaceWithReferences(space, dict(base_config), reference_points(space, base_config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate is "experimental"
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True,
            # random start-up trials: Optuna's 10 would leave a 12-trial study almost no TPE trials
            n_startup_trials=max(2, min(10, num_samples // 3)))
    searcher = StudySearcher(function, storage_url=storage_url, study_name=study_name, sampler=sampler,
                             epochs=int(base_config.get("epochs", 1)), resume=resume)
    if not resume:
        searcher.connect()
    return searcher


# --- confirmation runs and schedulers -------------------------------------------------------------------

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
