"""MLflow records of a study, written only by the driver (SQLite tolerates one writer).

One experiment per study, one parent run for the study, one nested child run per trial. Runs are
found again by tags (`mpt_study.run_type`, `ray.trial_id`), never by in-memory state, so a resumed study
continues the same runs instead of creating duplicates, and a metric step already logged is never
logged twice. The best trial's runs and the reference configurations' carry `mpt_study.role`, which the runs
table shows and filters; every trial run has a colour of its own configuration. The experiment and the parent
run carry descriptions that the MLflow UI shows (`python study/ui.py NAME` opens it on the study's store;
`study.mlflow_views` writes the study run's final description and the per-language view).
"""

from __future__ import annotations

import colorsys
import csv
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from ray import tune

from mpt.config import MPTConfig
from search_spaces import REFERENCE_POINTS
from study.results import last_line
from study.ui import run_url, ui_base_url
from trainable.metrics import TrialReport
from trainable.spec import META_KEYS, trial_config

RUN_TYPE_TAG = "mpt_study.run_type"  # "study" (parent) or "trial"
ROLE_TAG = "mpt_study.role"  # a trial's configuration to the study: "best", a reference's name, or both
BEST_ROLE = "best"
PHASE_TAG = "mpt_study.phase"  # "search" or "confirm"
TRIAL_ID_TAG = "ray.trial_id"
REFERENCE_TAG = "mpt_study.reference"
SEARCHED_TAG = "mpt_study.searched"  # the fields this trial set (the rest are the base config's)
PARENT_TAG = "mlflow.parentRunId"  # what makes MLflow show a run nested under another
DESCRIPTION_TAG = "mlflow.note.content"  # the UI shows it as the description of a run or an experiment
# A run's colour in the UI's table and charts, as its colour picker sets it; by default the UI hashes run ids
# into a small palette, so unrelated runs share colours.
COLOUR_TAG = "mlflow.runColor"
GOLDEN_RATIO = (5**0.5 - 1) / 2
# The MLflow 3 UI opens experiments in its GenAI view unless told otherwise (an experiment's kind, or
# the "Model training" switch, which `?workflowType=machine_learning` in the URL sets).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
REPORT_ARTIFACT_DIR = "report"  # the parent run's report.md and plots (study.mlflow_parent_run logs them)
MAX_TAG_CHARS = 5000
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit of params in one log_batch
SHOWN_PARAMS = 3  # how many searched values a run name shows
logger = logging.getLogger(__name__)


def run_name(
    space: str, trial_number: int, params: dict[str, Any], reference: str | None = None, phase: str = "search"
) -> str:
    """A readable run name: space, trial number, then the reference name or the first searched values."""
    prefix = f"{space}-{trial_number:03d}" if phase == "search" else f"{space}-confirm-{trial_number:03d}"
    if phase == "confirm" and "seed" in params:
        prefix += f"-seed{params['seed']}"
    if phase == "confirm" and "shots_per_class" in params:  # a shot-count sweep's run (study.tuner)
        prefix += f"-k{params['shots_per_class']}"
    if reference:
        return f"{prefix} {reference}"
    shown = [
        f"{_abbreviated(k)}={_format(v)}"
        for k, v in params.items()
        if k not in (*META_KEYS, "seed", "shots_per_class" if phase == "confirm" else "")
    ][:SHOWN_PARAMS]
    return " ".join([prefix, *shown])


def _abbreviated(name: str) -> str:
    """A searched field's short name in run names (`alignment_weight` -> `w`)."""
    return {
        "alignment_weight": "w",
        "kl_temperature": "T",
        "alignment_batch_size": "align_bs",
        "teacher_stop_gradient": "stopgrad",
        "translator_depth": "depth",
        "translator_hidden": "hidden",
        "translator_residual": "residual",
        "translator_mode": "mode",
        "prompt_length": "len",
        "prompt_init": "init",
        "learning_rate": "lr",
        "ce_only_epochs": "ce_only",
    }.get(name, name)


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )  # its description: mlflow_views


def find_runs(client: MlflowClient, experiment_id: str, **tags: str) -> list:
    """Runs of the experiment whose tags have the given values (keys use '.' where Python cannot)."""
    clauses = [f"tags.`{key.replace('__', '.')}` = '{value}'" for key, value in tags.items()]
    return list(client.search_runs([experiment_id], filter_string=" and ".join(clauses), max_results=10000))


def find_study_run(client: MlflowClient, experiment_id: str) -> str | None:
    runs = find_runs(client, experiment_id, mpt_study__run_type="study")
    return runs[0].info.run_id if runs else None


def start_study_run(
    client: MlflowClient, experiment_id: str, name: str, params: dict[str, Any], tags: dict[str, str]
) -> str:
    """The parent run of a new study."""
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={RUN_TYPE_TAG: "study", DESCRIPTION_TAG: study_description(name, params), **tags},
    )
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def study_description(name: str, params: dict[str, Any]) -> str:
    """What the parent run is, for its page in the MLflow UI (Markdown); the study's answer goes before it once
    the study ends (`study.mlflow_views.final_description`)."""
    labels = {
        "space": "space {}",
        "objective": "objective {}",
        "num_samples": "{} trials",
        "scheduler": "scheduler {}",
        "seed": "seed {}",
    }
    settings = ", ".join(label.format(params[key]) for key, label in labels.items() if key in params)
    references = ", ".join(f"`{reference}`" for reference in REFERENCE_POINTS)
    return (
        f"Study **{name}**" + (f" ({settings})" if settings else "") + ". Its trials are the runs nested under "
        f"this one, named `<space>-<trial number> <key values>` (the reference configurations: {references}); "
        f"the confirmation's are `<space>-confirm-<trial number>-seed<seed>`. The tag `{ROLE_TAG}` marks the "
        f"runs of the best trial and of the references. The report is this run's artifact "
        f"`{REPORT_ARTIFACT_DIR}/report.html` (the plots inline; `{REPORT_ARTIFACT_DIR}/report.md` and "
        f"`{REPORT_ARTIFACT_DIR}/*.png` hold the same)."
    )


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    entries = [Param(k, _param_value(v)) for k, v in params.items()]
    for start in range(0, len(entries), MAX_PARAMS_PER_BATCH):  # MLflow refuses larger batches
        client.log_batch(run_id, params=entries[start : start + MAX_PARAMS_PER_BATCH], synchronous=True)


def _param_value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return text[:6000]  # MLflow's limit for a param value


def trial_run_name(space: str, phase: str, config: dict[str, Any]) -> str:
    """The name of a trial, from its Tune config: its MLflow run's, and the console's (study.console)."""
    params = {k: v for k, v in config.items() if k not in META_KEYS}
    return run_name(space, int(config.get("trial_number", 0)), params, config.get("reference"), phase)


def run_role(reference: str | None, best: bool) -> str:
    """A trial run's `mpt_study.role`: "best", the reference configuration's name, both ("best (vanilla)": the
    search found nothing better than that reference), or "" (none: no tag)."""
    if best and reference:
        return f"{BEST_ROLE} ({reference})"
    return BEST_ROLE if best else reference or ""


def run_colour(trial_number: int) -> str:
    """The colour of a configuration's runs (its search trial and its confirmation runs alike): hues a golden
    ratio apart, so no two configurations of a study share one and neighbouring trials differ most."""
    red, green, blue = colorsys.hsv_to_rgb((trial_number * GOLDEN_RATIO) % 1.0, 0.75, 0.8)
    return "#" + "".join(f"{round(255 * channel):02x}" for channel in (red, green, blue))


def effective_params(base_config: MPTConfig, config: dict[str, Any]) -> dict[str, Any]:
    """Every field of the trial's MPTConfig (base config, searched values on top), so the MLflow UI can filter
    and compare trials by any field, searched or not; a config that fails validation, as given."""
    try:
        return trial_config(base_config, config).to_dict()
    except ValueError:  # the trial fails on it too; its run still says what it was
        return {**base_config.to_dict(), **{k: v for k, v in config.items() if k not in META_KEYS}}


class StudyTracker(tune.Callback):
    """Tune callback on the driver: one nested MLflow run per trial, metrics per epoch (step = epoch)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        space: str,
        base_config: MPTConfig,
        phase: str = "search",
        best_trial: int | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.space = space
        self.base_config = base_config
        self.phase = phase
        self.best_trial = best_trial  # the search's best (its trial number): its confirmation runs' role says so
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._parent_run_id = ""
        self._runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self._last_step: dict[str, int] = {}  # Ray trial id -> last epoch logged

    # Tune pickles its callbacks with the experiment state: keep the connection out of it.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            experiment = self._client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise RuntimeError(f"MLflow experiment {self.experiment_name!r} vanished from {self.tracking_uri}")
            self._experiment_id = experiment.experiment_id
            self._parent_run_id = find_study_run(self._client, self._experiment_id) or ""
        return self._client

    def setup(self, **info) -> None:
        self.client  # connect before the first trial: a bad URI fails the study at once, not mid-way

    def run_id(self, trial) -> str:
        """The trial's run: found by its Ray trial id (a resumed trial), else created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        existing = find_runs(client, self._experiment_id, ray__trial_id=trial.trial_id)
        if existing:
            run_id = existing[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, "loss")
            self._last_step[trial.trial_id] = max((m.step for m in history), default=0)
        else:
            run_id = self._create_trial_run(trial)
            self._last_step[trial.trial_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create_trial_run(self, trial) -> str:
        config = dict(trial.config)
        reference = config.get("reference")
        number = int(config.get("trial_number", 0))
        searched = [k for k in config if k not in META_KEYS]
        tags = {
            RUN_TYPE_TAG: "trial",
            PHASE_TAG: self.phase,
            TRIAL_ID_TAG: trial.trial_id,
            "trial_number": str(number),
            SEARCHED_TAG: ",".join(searched),
            COLOUR_TAG: run_colour(number),
        }
        if self._parent_run_id:
            tags[PARENT_TAG] = self._parent_run_id
        if reference:
            tags[REFERENCE_TAG] = reference
        role = run_role(reference, self.best_trial is not None and number == self.best_trial)
        if role:
            tags[ROLE_TAG] = role
        run = self.client.create_run(
            self._experiment_id, run_name=trial_run_name(self.space, self.phase, config), tags=tags
        )
        log_params(self.client, run.info.run_id, effective_params(self.base_config, config))
        return run.info.run_id

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        run_id = self.run_id(trial)
        report = TrialReport.from_result(result)
        step = report.epoch
        if step <= self._last_step.get(trial.trial_id, 0):
            return  # already logged before an interruption: the resumed trial re-reported it
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for key, value in report.tracked_metrics(ranked=self.phase == "search").items()
        ]
        # the params hold the config as given (device auto, precision auto), the tags what the trial ran on (a
        # trial resumed on another node: the latest)
        tags = [RunTag(key, value) for key, value in report.runtime_tags().items()]
        self.client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
        self._last_step[trial.trial_id] = step

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        result = trial.last_result or {}
        if not TrialReport.from_result(result).trained_all_epochs:
            self.client.set_tag(run_id, "stopped_early", "true")  # ASHA stopped it before its last epoch
        self._log_trial_artifacts(run_id, trial.config, result)
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        error = trial_error_text(trial)
        self.client.set_tag(run_id, "error", (last_line(error) or error)[:MAX_TAG_CHARS])
        self._log_trial_artifacts(run_id, trial.config, trial.last_result or {}, error=error)
        self.client.set_terminated(run_id, status="FAILED")

    def _log_trial_artifacts(self, run_id: str, params: dict, result: dict, error: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="mpt-mlflow-") as directory:
            folder = Path(directory)
            config = {
                "trial": {k: params[k] for k in META_KEYS if k in params},
                "config": effective_params(self.base_config, params),
            }
            try:
                trial_config(self.base_config, params)
            except ValueError as err:  # an invalid config is why the trial failed: it is recorded as given
                config["config_error"] = str(err)
            (folder / "trial_config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
            rows = per_language_rows(result)
            if rows:
                write_language_csv(folder / "results_per_language.csv", rows)
            if error:
                (folder / "error.txt").write_text(error)
            for file in folder.iterdir():
                self.client.log_artifact(run_id, str(file))


def trial_error_text(trial) -> str:
    """A failed trial's error trace. Tune writes it into the trial's local folder before it calls back, and
    copies it to the storage folder later, which is where `trial.get_error()` reads: read the local file."""
    local = trial.error_file
    if local and Path(local).is_file():
        return Path(local).read_text(encoding="utf-8", errors="replace")
    return str(trial.get_error() or "the trial failed without an error message (see the Ray logs)")


def per_language_rows(result: dict) -> list[dict[str, Any]]:
    """Language, dev accuracy (at the selected epoch) and test accuracy, from a trial's final metrics: a column only
    where every language has a value (a search trial has no test; a confirmation run's dev is English alone,
    its metric `selected_dev_acc_en`), so no column is empty."""
    report = TrialReport.from_result(result)
    measures = {
        "dev_accuracy": report.selected_dev_accuracy,
        "test_accuracy": report.test.accuracy if report.test else {},
    }
    languages = sorted(set().union(*measures.values()))
    complete = {column: values for column, values in measures.items() if values and set(values) == set(languages)}
    return (
        [{"language": lang, **{column: values[lang] for column, values in complete.items()}} for lang in languages]
        if complete
        else []
    )


def write_language_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class TrialRunLinks:
    """Tune trial id -> its MLflow run's id and address in the UI: user attributes of the trial's Optuna trial
    (`study.search.StudySearcher`), so that optuna-dashboard links to MLflow. Picklable (Tune saves the searcher
    that holds it); connects when first called, after StudyTracker created the run as the trial started."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name

    def __call__(self, trial_id: str) -> dict[str, str]:
        try:
            client = MlflowClient(self.tracking_uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            runs = find_runs(client, experiment.experiment_id, ray__trial_id=trial_id) if experiment else []
        except MlflowException as err:  # the link is a convenience: the study goes on without it
            logger.warning("no MLflow run found for trial %s: %s", trial_id, err)
            return {}
        if not runs:
            return {}
        links = {"mlflow_run_id": runs[0].info.run_id}
        base = ui_base_url(self.tracking_uri)
        if base is not None:
            links["mlflow_run_url"] = run_url(base, experiment.experiment_id, runs[0].info.run_id)
        return links
