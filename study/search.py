"""The study's Optuna searcher (TPE, multivariate, seeded, reference points first), the confirmation's fixed
configs, and the schedulers.

`StudySearcher` is a Ray Tune `Searcher` that owns an Optuna study through Optuna's public API: `study.ask()`
and the space's define-by-run function make a trial's config, the storage records its per-epoch objective, and
`study.tell(number, ...)` ends it. The study lives in an Optuna storage (`study.optuna_storage`), named after
the study, which Optuna's own tools read (`optuna.load_study`, `optuna-dashboard`); only the driver writes to
it. A trial that ASHA stops early is told PRUNED (its intermediate values, one per epoch, are recorded as they
come), as Optuna's own pruning protocol does. A trial that fails is told FAIL only when the search ends with it
still failed (`tell_failed`): `--resume` may retry it, and Optuna cannot reopen a finished trial.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces import REFERENCE_POINTS, SearchSpace, reference_points
from study.errors import StudyError
from study.optuna_storage import load_optuna_study, open_storage
from study.settings import SCHEDULERS
from trainable.metrics import OBJECTIVE, SELECTED_DEV_PREFIX, TrialReport

METRIC, MODE = OBJECTIVE, "max"
SEARCH_ROLE = "search"  # the role of a trial TPE suggested (a reference trial's role is the reference's name)
logger = logging.getLogger(__name__)

# Tune trial id -> user attributes of its Optuna trial (the study supplies its MLflow run's id and address)
RunInfo = Callable[[str], Mapping[str, Any]]


# --- the search space as Optuna sees it -----------------------------------------------------------------


@dataclass
class SpaceWithReferences:
    """The define-by-run space with the study's reference points, which Optuna is given first (enqueued):
    what the space suggests for those is the reference's values. A trial's config is what the space suggested,
    as suggested, plus what the space does not suggest: a reference's fixed values of fields it does not search
    (the translator depth in the kl space, for example) or cannot represent (the probe's prompt length 0, which
    Optuna records at the base config's value), its name, and the trial's Optuna number, which names its MLflow
    run."""

    space: SearchSpace
    base: dict[str, Any]  # the study's base config: ranges may depend on it
    references: dict[str, dict[str, Any]]  # name -> the values Optuna enqueues, in evaluation order

    def role(self, number: int) -> str:
        names = list(self.references)
        return names[number] if number < len(names) else SEARCH_ROLE

    def config(self, number: int, params: Mapping[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {**params, "trial_number": number}
        role = self.role(number)
        if role != SEARCH_ROLE:
            config["reference"] = role
            # the reference's fixed values win: one the space cannot represent (the probe's prompt length 0) was
            # enqueued at the base config's value (search_spaces.reference_points), and the trial runs the fixed one
            config.update(REFERENCE_POINTS[role])
        return config

    @property
    def points(self) -> list[dict[str, Any]]:
        return [dict(point) for point in self.references.values()]


# --- the searcher ---------------------------------------------------------------------------------------


class StudySearcher(Searcher):
    """A Tune searcher over an Optuna study kept in an Optuna storage, resumable after a driver kill.

    Tune saves the searcher (`save`) with its experiment state now and then and resumes from the last save
    (`restore`), while the storage holds every trial Optuna was told of. The saved state is therefore only the
    sampler and which Tune trial is which Optuna trial; the rest is read back from the storage: trials finished
    since the save are not told again, and a trial asked for since the save (one Tune forgot) is handed out
    again, with its suggested values, to the next trial Tune asks for instead of a new one.
    """

    def __init__(
        self,
        function: SpaceWithReferences,
        *,
        storage_url: str,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        epochs: int,
        resume: bool,
        run_info: RunInfo | None = None,
    ):
        super().__init__(metric=METRIC, mode=MODE)
        self.function, self.storage_url, self.study_name = function, storage_url, study_name
        self.sampler, self.epochs, self.resume = sampler, epochs, resume
        self.run_info = run_info  # kept by Tune's pickle of the searcher (tuner.pkl), not in the saved state
        self.numbers: dict[str, int] | None = None  # Tune trial id -> Optuna trial number; None: no study yet
        self.max_concurrent: int | None = None  # trials suggested and not yet ended, at most (None: no limit)
        self._forget_storage()

    # what _forget_storage sets: left out of pickles
    _FROM_STORAGE = ("_study", "_storage", "_storage_ids", "_orphans", "_steps", "_told", "_last", "_live")

    def _forget_storage(self) -> None:
        """What is read back from the storage (on connect), never saved: a saved copy would be stale."""
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.BaseStorage | None = None
        self._storage_ids: dict[int, int] = {}  # Optuna trial number -> the storage's trial id
        self._orphans: list[int] = []  # Optuna trials asked for since Tune's last save (it forgot them)
        self._steps: dict[str, set[int]] = {}  # Tune trial id -> the steps its Optuna trial has values for
        self._told: dict[str, TrialState] = {}  # Tune trial id -> the state its Optuna trial was told
        self._last: dict[str, dict] = {}  # Tune trial id -> its last result
        self._live: set[str] = set()  # Tune trial ids whose end the searcher has not heard of

    def connect(self) -> optuna.Study:
        """The Optuna study in its storage: created (with the reference points enqueued) for a new Tune
        experiment, loaded and matched with the saved state for a restored one."""
        if self._study is not None:
            return self._study
        storage = open_storage(self.storage_url)
        exists = self.study_name in optuna.study.get_all_study_names(storage)
        if self.numbers is None:
            if exists and not self.resume:
                raise StudyError(
                    f"the Optuna storage {self.storage_url!r} already has a study "
                    f"{self.study_name!r}: choose another --name, or another --optuna-storage"
                )
            if exists:  # Tune saved nothing before the interruption: its experiment, and our study, start over
                optuna.delete_study(study_name=self.study_name, storage=storage)
            study = optuna.create_study(
                storage=storage,
                sampler=self.sampler,
                pruner=optuna.pruners.NopPruner(),
                study_name=self.study_name,
                direction="maximize",
            )
            for point in self.function.points:
                study.enqueue_trial(point)
            self.numbers = {}
        elif not exists:
            raise StudyError(
                f"the Optuna storage {self.storage_url!r} has lost study {self.study_name!r} that "
                f"this study's saved state refers to: restore the storage, or start a new study"
            )
        else:
            study = optuna.load_study(
                study_name=self.study_name, storage=storage, sampler=self.sampler, pruner=optuna.pruners.NopPruner()
            )
        self._study, self._storage = study, storage
        self._match_storage(study)
        return study

    def _match_storage(self, study: optuna.Study) -> None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for trial_id, number in self.numbers.items():
            if number not in trials:
                raise StudyError(
                    f"Optuna study {self.study_name!r} in {self.storage_url!r} has no trial "
                    f"{number}, which Tune's saved state names: the storage is not this study's"
                )
            self._steps[trial_id] = set(trials[number].intermediate_values)
            if trials[number].state.is_finished():
                self._told[trial_id] = trials[number].state  # told before the interruption: not told again
            else:  # running when Tune saved it, or failed (the resume retries it)
                self._live.add(trial_id)
        known = set(self.numbers.values())
        self._orphans = [n for n, t in sorted(trials.items()) if n not in known and t.state != TrialState.WAITING]

    def _storage_id(self, number: int) -> int:
        if number not in self._storage_ids:
            study_id = self._storage.get_study_id_from_name(self.study_name)
            self._storage_ids[number] = self._storage.get_trial_id_from_study_id_trial_number(study_id, number)
        return self._storage_ids[number]

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Tune's metric and mode must be the searcher's own; the space is its own (define-by-run)."""
        return not config and metric in (None, self.metric) and mode in (None, self.mode)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """The searcher limits how many trials run at once, not Tune's ConcurrencyLimiter: the limiter forgets a
        failed trial, so it would never pass on the end of one that `--resume` retries."""
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict | None:
        study = self.connect()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None  # Tune asks again when a trial ends
        if self._orphans:
            number = self._orphans.pop(0)
            params = self._storage.get_trial(self._storage_id(number)).params
        else:
            trial = study.ask()  # the next enqueued reference point first, then the sampler's suggestion
            self.function.space.define(trial, self.function.base)
            number, params = trial.number, trial.params
            self._set_user_attrs(
                number, {"role": self.function.role(number), "seed": int(self.function.base.get("seed", 0))}
            )
        self.numbers[trial_id] = number
        self._live.add(trial_id)
        return self.function.config(number, params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.connect()
        if trial_id in self._told or trial_id not in self.numbers or self.metric not in result:
            return
        self._last[trial_id] = result
        step = TrialReport.from_result(result).epoch
        if step in self._steps.setdefault(trial_id, set()):
            return  # an epoch redone after an interruption: Optuna keeps its first value
        self._storage.set_trial_intermediate_value(
            self._storage_id(self.numbers[trial_id]), step, float(result[self.metric])
        )
        self._steps[trial_id].add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        study = self.connect()
        self._live.discard(trial_id)
        if self._told.get(trial_id) == TrialState.FAIL and not error:
            logger.warning(
                "trial %s, retried by --resume, succeeded, but its Optuna trial stays FAIL: it was "
                "told so when an earlier search ended, and Optuna cannot reopen a finished trial",
                self.numbers[trial_id],
            )
        if trial_id in self._told or trial_id not in self.numbers:
            return
        if result and not error:
            self.on_trial_result(trial_id, result)  # Tune hands a trial's last result to this call alone
        number = self.numbers[trial_id]
        self._set_user_attrs(number, self.outcome_attrs(trial_id, result or self._last.get(trial_id) or {}))
        if error:
            return  # told FAIL if still failed when the search ends (tell_failed): --resume may retry it
        value = (result or {}).get(self.metric)
        if value is not None and not math.isfinite(value):
            state, value = TrialState.FAIL, None
        elif value is None or self.stopped_early(result):
            state, value = TrialState.PRUNED, None  # Optuna takes the last intermediate value as its value
        else:
            state = TrialState.COMPLETE
        try:
            study.tell(number, value, state=state)
        except (ValueError, RuntimeError) as err:  # the study goes on; what Optuna refused is in the driver's log
            logger.warning("Optuna did not record trial %s as %s: %s", number, state.name, err)
        self._told[trial_id] = state

    def outcome_attrs(self, trial_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """What optuna-dashboard shows of a trial beside its values: dev accuracy per language at the selected
        epoch, and (from `run_info`) where its MLflow run is."""
        report = TrialReport.from_result(result)
        attrs: dict[str, Any] = {"ray_trial_id": trial_id}
        if report.best_epoch:
            attrs["selected_epoch"] = report.best_epoch
        attrs.update({f"{SELECTED_DEV_PREFIX}{lang}": float(acc) for lang, acc in report.selected_dev_accuracy.items()})
        if self.run_info is not None:
            attrs.update(self.run_info(trial_id))
        return attrs

    def _set_user_attrs(self, number: int, attrs: Mapping[str, Any]) -> None:
        # through the storage: a resumed driver has no Trial object of a trial asked for before it started
        for key, value in attrs.items():
            self._storage.set_trial_user_attr(self._storage_id(number), key, value)

    def stopped_early(self, result: Mapping[str, Any]) -> bool:
        """Whether the trial ended before its last planned epoch (a scheduler stopped it)."""
        report = TrialReport.from_result(result)
        return report.epoch < (report.planned_epochs or self.epochs)

    def __getstate__(self) -> dict:
        # Tune pickles the searcher in tuner.pkl: no storage connection, nothing read from the storage
        return {k: v for k, v in self.__dict__.items() if k not in self._FROM_STORAGE}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._forget_storage()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"numbers": self.numbers, "sampler": self.sampler}, handle)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's state at its last save; connect() matches it with the storage."""
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.numbers, self.sampler = state["numbers"], state["sampler"]
        self._forget_storage()


def make_searcher(
    space: SearchSpace,
    base_config: dict[str, Any],
    seed: int,
    num_samples: int,
    *,
    storage_url: str,
    study_name: str,
    resume: bool = False,
    run_info: RunInfo | None = None,
    skip_references: Iterable[str] = (),
) -> StudySearcher:
    """The study's searcher over `space`: seeded multivariate TPE, reference points first. A new study's Optuna
    study is created now, so that a storage problem stops the study before its trials start. `run_info` maps a
    Tune trial id to more user attributes of its Optuna trial (its MLflow run); it must pickle.
    `skip_references` names reference points the study cannot run (the probe on an MLM-verbalizer backbone)."""
    function = SpaceWithReferences(
        space, dict(base_config), reference_points(space, base_config, skip=tuple(skip_references))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate is "experimental"
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            # random start-up trials: Optuna's 10 would leave a 12-trial study almost no TPE trials
            n_startup_trials=max(2, min(10, num_samples // 3)),
        )
    searcher = StudySearcher(
        function,
        storage_url=storage_url,
        study_name=study_name,
        sampler=sampler,
        epochs=int(base_config.get("epochs", 1)),
        resume=resume,
        run_info=run_info,
    )
    if not resume:
        searcher.connect()
    return searcher


def tell_failed(storage_url: str, study_name: str, numbers: Iterable[int]) -> list[int]:
    """Tell Optuna the trials (by number) that the ended search left failed, as FAIL; returns those told.
    Trials Optuna already holds as finished are left as they are."""
    study = load_optuna_study(storage_url, study_name)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    told = []
    for number in sorted(set(numbers)):
        if number in trials and not trials[number].state.is_finished():
            study.tell(number, state=TrialState.FAIL)
            told.append(number)
    return told


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
        return ReferencePreservingASHA(
            time_attr="training_iteration", metric=METRIC, mode=MODE, max_t=epochs, grace_period=1, reduction_factor=2
        )
    raise ValueError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
