"""A study's Optuna storage: where its Optuna study lives, so that Optuna's own tools read it.

    optuna-dashboard results/NAME/optuna.log                     # the default storage: a journal file
    python -c "import optuna; print(optuna.load_study(study_name='NAME', storage=...).trials)"

By default a journal file in the study's folder, results/<study>/optuna.log; `--optuna-storage URL` names a
database instead (`postgresql+psycopg://user:password@host/db` on a cluster, with the postgres extra;
`sqlite:///path.db`) or another journal file. Only the study's driver writes to it; the report reads it. No Ray
here: the report imports this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import optuna
from optuna.distributions import BaseDistribution

from study.errors import StudyError

OPTUNA_JOURNAL_FILE = "optuna.log"  # the default storage, in the study's folder
MIN_TRIALS_FOR_IMPORTANCE = 8  # complete trials below which parameter importances are noise (the report shows none)


def optuna_storage_url(setting: str, study_dir: Path) -> str:
    """The study's Optuna storage: the `--optuna-storage` setting, or the journal file in its folder."""
    return setting or str(study_dir / OPTUNA_JOURNAL_FILE)


def is_database_url(url: str) -> bool:
    return "://" in url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (`postgresql://...`, `sqlite:///...`) opens an `RDBStorage`, a file path a `JournalStorage`.

    The journal is the local default. Measured on this project's 2-core machine (40 trials of 6 reports each):
    0.6 ms an operation against SQLite's 4-6 ms, and no error with four writing processes and a reader at
    once, while two processes opening a new SQLite database together failed (both create its tables)."""
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's own dependency

    try:
        if is_database_url(url):
            return rdb_storage(url)
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    except (ImportError, OSError, ValueError, SQLAlchemyError) as err:
        raise StudyError(
            f"cannot open the Optuna storage {url!r} ({type(err).__name__}: {err}): give "
            f"--optuna-storage a reachable database URL (e.g. postgresql+psycopg://user:password@host/db, "
            f"with the postgres extra installed) or a writable file path, or leave it out for the "
            f"study's own journal file"
        ) from None


SCHEMA_LOCK = 0x6D7074  # a PostgreSQL advisory lock key ("mpt"): one process at a time creates Optuna's tables


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's `RDBStorage`. On PostgreSQL, opened under an advisory lock: two studies starting at once on a new
    database would both create Optuna's tables, and one fails (`duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"`, seen with three processes on PostgreSQL 15); under the lock the second finds
    them made."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return optuna.storages.RDBStorage(url)
        with engine.connect() as connection:  # the lock is the session's: released when it closes
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
            return optuna.storages.RDBStorage(url)
    finally:
        engine.dispose()


def load_optuna_study(url: str, name: str) -> optuna.Study:
    """The study's Optuna study, read from its storage (what `optuna.load_study` gives any reader)."""
    if not is_database_url(url) and not Path(url).is_file():  # opening a journal creates it: readers never write
        raise StudyError(f"the study has no Optuna storage: {url} is missing (was it run by a version that kept none?)")
    storage = open_storage(url)
    if name not in optuna.study.get_all_study_names(storage):
        raise StudyError(
            f"the Optuna storage {url!r} has no study {name!r}: was it run with another "
            f"--optuna-storage, or by a version that kept none?"
        )
    return optuna.load_study(study_name=name, storage=storage)


def set_study_attributes(url: str, name: str, attributes: Mapping[str, Any]) -> None:
    """Set user attributes of Optuna study `name` (optuna-dashboard shows them on the study's page): what the
    study concluded, where its MLflow runs are, caveats. Values must be JSON-serializable."""
    study = load_optuna_study(url, name)
    for key, value in attributes.items():
        study.set_user_attr(key, value)


def annotate_study(url: str, name: str, verdict: str, links: Mapping[str, str]) -> dict[str, Any]:
    """What optuna-dashboard shows on the study's page once the study ended: the verdict, where the study is in
    MLflow (`links`, e.g. `mlflow_experiment_url`), and, with fewer complete trials than the report's importances
    need, a caveat against the dashboard's importance chart. Returns the attributes set."""
    study = load_optuna_study(url, name)
    attributes: dict[str, Any] = {"verdict": verdict, **links}
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        attributes["importance_caveat"] = (
            f"only {complete} complete trials: parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} to mean "
            f"anything (the report shows none), so read the dashboard's importance chart as noise"
        )
    for key, value in attributes.items():
        study.set_user_attr(key, value)
    return attributes


@dataclass
class SearchedParameters:
    """What a study's trials searched, as its Optuna study records it: one trial's parameters need not be
    another's (conditional spaces), and a trial's row has the Optuna trial's number (`trial_number`)."""

    study: optuna.Study | None  # None: no Optuna study to read (`problem` says why)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)  # every parameter, first seen first
    by_trial: dict[int, dict[str, Any]] = field(default_factory=dict)  # Optuna trial number -> its searched values
    problem: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.distributions)

    def of(self, trial_number: int) -> dict[str, Any]:
        return self.by_trial.get(trial_number, {})


def searched_parameters(url: str, name: str) -> SearchedParameters:
    """The searched parameters of every trial of Optuna study `name` in storage `url`."""
    try:
        study = load_optuna_study(url, name)
    except StudyError as err:
        return SearchedParameters(None, problem=str(err))
    searched = SearchedParameters(study)
    for trial in study.get_trials(deepcopy=False):
        searched.by_trial[trial.number] = dict(trial.params)
        for param, distribution in trial.distributions.items():
            searched.distributions.setdefault(param, distribution)
    return searched
