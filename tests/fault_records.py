"""What the fault tests (tests/test_faults*.py) run and read: a study in a working directory, and what it left:
the epochs its trials trained (`MPT_EPOCH_LOG`), its trial folders and Tune's saved state, its Optuna trials,
its MLflow runs and trials.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests import smoke_studies
from tests.smoke_studies import RUN, STUDY_TIMEOUT_S


def run_study(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S
    )


def epochs_trained(log: Path) -> list[dict]:
    """The MPT_EPOCH_LOG records: one per epoch a trial actually trained."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def epochs_of(records: list[dict], trial_id: str) -> list[int]:
    return [r["epoch"] for r in records if r["trial_id"] == trial_id]


def trial_folders(experiment: Path) -> dict[str, Path]:
    """Ray trial id -> trial folder (named `train_mpt_<id>` by study.search.trial_dirname)."""
    return {folder.name.rsplit("_", 1)[1]: folder for folder in experiment.glob("train_mpt_*") if folder.is_dir()}


def has_finished(folder: Path) -> bool:
    """Whether the trial's result.json holds its final report (that of its last planned epoch)."""
    from trainable.metrics import TrialReport

    results = folder / "result.json"
    lines = results.read_text().splitlines() if results.exists() else []
    return bool(lines) and TrialReport.from_result(json.loads(lines[-1])).trained_all_epochs


def saved_as_finished(experiment: Path, status: str = "TERMINATED") -> set[str]:
    """The trials Tune's last saved experiment state records as finished (TERMINATED; or as `status`, e.g.
    ERROR): what a resume knows.

    A trial can write its final result.json and be killed with the driver before Tune saves its state; the
    resume then continues it from the checkpoint the saved state names, and it trains its last epoch again."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return set()
    try:
        trials = [json.loads(data) for data, _ in json.loads(states[-1].read_text())["trial_data"]]
    except ValueError:  # read while Tune rewrites it (polling a running study): nothing known yet
        return set()
    return {t["trial_id"] for t in trials if t["status"] == status}


def optuna_trials(experiment: Path) -> dict[int, tuple[str, dict, float | None]]:
    """Optuna number -> (state, params, value), from the study's Optuna storage (results/NAME/optuna.log) as
    `optuna.load_study` reads it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(
        JournalFileBackend(str(experiment.parent.parent / experiment.name / "optuna.log"))
    )
    study = optuna.load_study(study_name=experiment.name, storage=storage)
    return {t.number: (t.state.name, t.params, t.value) for t in study.get_trials(deepcopy=False)}


def mlflow_client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")


def study_runs(cwd: Path, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) of a study's MLflow experiment."""
    return smoke_studies.study_runs(f"sqlite:///{cwd / 'results' / 'mlflow.db'}", experiment)


def metric_history(cwd: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow_client(cwd).get_metric_history(run_id, key))


def trial_rows(cwd: Path, name: str) -> list[dict]:
    return json.loads((cwd / "results" / name / "trials.json").read_text())


def kill_process_group(pid: int) -> None:
    """SIGKILL what is left of a process group we started (Ray helpers a killed driver leaves behind)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
