"""The study's own MLflow run: one object keeps the parent run of a study from its start to its end.

`StudyRun` creates the study's experiment (with its saved per-language view, `study.mlflow_views`) and parent run
(its settings as params, the environment as tags) or finds them again when the study resumes, hands out the Tune
callback that records the trials (`study.tracking.StudyTracker`), retires runs of trials a killed driver lost,
marks the best trial's runs, writes its trained prompt (and the confirmation runs') and logs it as an MLflow
model, logs the headline metrics and the report, writes the description the study run opens with (the verdict,
the best trial, the references, per-language accuracy), and ends the run as finished, failed or interrupted.
Like the rest of the MLflow records it is written by the driver only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from mpt.config import MPTConfig
from study.environment import environment_tags
from study.mlflow_views import (
    VIEW_TAG,
    experiment_description,
    final_description,
    saved_view,
    search_run_links,
    view_route,
)
from study.results import COMPLETE, TrialRow
from study.settings import StudySettings
from study.tracking import (
    DESCRIPTION_TAG,
    MAX_TAG_CHARS,
    REPORT_ARTIFACT_DIR,
    ROLE_TAG,
    StudyTracker,
    find_runs,
    find_study_run,
    get_or_create_experiment,
    run_role,
    start_study_run,
)
from study.ui import experiment_url, ui_base_url
from study.uris import redacted
from trainable.spec import STATE_FILE

REPORT_SUFFIXES = (".md", ".html", ".png", ".json")  # the study folder's files the parent run keeps
BEST_MODEL_DIR, CONFIRM_MODELS_DIR = "best_model", "confirm_models"  # trained-prompt directories in the study folder


class StudyRun:
    """The parent MLflow run of one study, in the study's experiment."""

    def __init__(self, settings: StudySettings) -> None:
        self.settings = settings
        self.client = MlflowClient(settings.mlflow_tracking_uri)  # a SQLite store's database is created here
        self.experiment_id = ""
        self.run_id = ""
        self.best_trial: int | None = None  # the search's best, once known (log_best)
        self._backbones: dict = {}  # (name, num_layers, MLM head?) -> the backbone trained prompts are written with

    def start(self, results_root: Path) -> None:
        """Create the experiment and the parent run; a resumed study finds them again and runs on."""
        settings = self.settings
        artifacts = None
        if settings.mlflow_tracking_uri.startswith("sqlite:"):  # keep artifacts with the database, not in ./mlruns
            artifacts = (results_root / "mlartifacts" / settings.name).as_uri()
        self.experiment_id = get_or_create_experiment(self.client, settings.name, artifacts)
        # what the runs page opens with, and its saved view of the best trial and the references, per language
        self.client.set_experiment_tag(self.experiment_id, DESCRIPTION_TAG, experiment_description(settings.name))
        self.client.set_experiment_tag(
            self.experiment_id, VIEW_TAG, saved_view(settings.base_config.languages, int(time.time() * 1000))
        )
        run_id = find_study_run(self.client, self.experiment_id)
        if run_id is None:
            run_id = start_study_run(self.client, self.experiment_id, settings.name, self._params(), self._tags())
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def _params(self) -> dict:
        settings = self.settings
        search_settings = {
            "space": settings.space,
            "objective": settings.objective,
            "num_samples": settings.num_samples,
            "scheduler": settings.scheduler,
            "seed": settings.seed,
            "smoke": settings.smoke,
            "sampler": "TPE(multivariate)",
            "storage_path": settings.storage_path,
        }
        # no credentials in MLflow: a URI with a token (storage, data, hub repo) is logged without it
        return redacted({**search_settings, **{f"base.{k}": v for k, v in settings.base_config.to_dict().items()}})

    def _tags(self) -> dict:
        config = self.settings.base_config
        return redacted(
            {
                **environment_tags(),
                "backbone": config.backbone,
                "data": config.data,
                "languages": ",".join(config.languages),
            }
        )

    def tracker(self, phase: str) -> StudyTracker:
        """The Tune callback that records the trials of one phase ("search" or "confirm") under this run."""
        settings = self.settings
        # no credentials in MLflow, nor in Tune's experiment state, which keeps the tracker
        base = MPTConfig.from_dict(redacted(settings.trial_base_config(ranked=phase == "search").to_dict()))
        return StudyTracker(
            settings.mlflow_tracking_uri,
            settings.name,
            settings.space,
            base,
            phase,
            best_trial=self.best_trial if phase == "confirm" else None,
        )

    def retire_lost_trials(self, rows: list[TrialRow]) -> None:
        """Delete the MLflow runs of search trials the study no longer has, so each trial keeps exactly one run.

        Tune saves its state every few seconds: a driver killed between starting a trial and the next save
        leaves an MLflow run for a trial the resumed study does not know (the searcher state is from the same
        save, so the study runs that point again, under a new trial id). The run is marked KILLED and deleted
        (MLflow keeps deleted runs restorable)."""
        client = self.client
        known = {row.trial_id for row in rows}
        for run in find_runs(client, self.experiment_id, mpt_study__run_type="trial", mpt_study__phase="search"):
            if run.data.tags.get("ray.trial_id") not in known:
                client.set_tag(
                    run.info.run_id, "lost", "its trial was lost with a killed driver and ran again as a new trial"
                )
                client.set_terminated(run.info.run_id, status="KILLED")
                client.delete_run(run.info.run_id)

    def log_best(self, best: TrialRow, result, study_dir: Path, register_as: str | None = None) -> None:
        """Tag the best trial's run (`mpt_study.role` says "best"; its confirmation runs will too); write its
        trained prompt to `study_dir/best_model/` (from `result`, its Tune result, if any) and log that on the run as
        the MLflow model `model` (registered in the Model Registry as `register_as` when given); then the best
        objective."""
        self.best_trial = best.trial_number
        best_runs = find_runs(self.client, self.experiment_id, ray__trial_id=best.trial_id)
        if best_runs:
            run_id = best_runs[0].info.run_id
            self.client.set_tag(run_id, ROLE_TAG, run_role(best.reference, True))
            self.client.set_tag(run_id, "best_trial", "true")
            if result is not None:
                directory = self._export(result.checkpoint, study_dir / BEST_MODEL_DIR, best)
                if directory is not None:
                    from study.mlflow_model import log_trained_prompt

                    log_trained_prompt(self.settings.mlflow_tracking_uri, run_id, directory, register_as)
        self.client.set_tag(self.run_id, "best_trial_number", str(best.trial_number))
        self.log_summary(best)

    def export_confirmation_models(self, rows: list[TrialRow], study_dir: Path) -> list[Path]:
        """Write the trained prompt of every complete confirmation run (`rows`, the confirmation's trial rows) to
        `study_dir/confirm_models/<run name>/`, the run name without its values (`alignment-confirm-003-seed1`);
        returns the directories written."""
        from study.tracking import run_name

        written = []
        for row in rows:
            if row.status != COMPLETE or row.checkpoint is None:
                continue
            name = run_name(self.settings.space, row.trial_number, row.params, phase="confirm").split(" ")[0]
            directory = self._export(self._checkpoint(row.checkpoint), study_dir / CONFIRM_MODELS_DIR / name, row)
            if directory is not None:
                written.append(directory)
        return written

    def _export(self, checkpoint, directory: Path, row: TrialRow) -> Path | None:
        """`export_trained_prompt` on a backbone loaded once per study (every trial of a study shares it)."""

        def backbone_for(config):
            key = (config.backbone, config.num_layers, config.wants_mlm_head)
            if key not in self._backbones:
                from mpt.api import load_backbone_for

                self._backbones[key] = load_backbone_for(config)
            return self._backbones[key]

        training = {
            "study": self.settings.name,
            "trial_number": row.trial_number,
            "seed": row.seed,
            "dev_accuracy_selected": row.dev_accuracy,
        }
        if row.test_accuracy:  # runs that evaluated test: the figures mpt.evaluate reproduces
            training.update(
                accuracy=row.test_accuracy, average=row.test_average, average_target=row.test_average_target
            )
        return export_trained_prompt(checkpoint, directory, training, backbone_for)

    def _checkpoint(self, path: str):
        """A trial row's checkpoint (its path) as a Ray Checkpoint, on the study's storage file system."""
        from ray.tune import Checkpoint

        storage = self.settings.storage_path
        if "://" in storage and not storage.startswith("file://"):  # s3://, gs://: the row holds the bucket path
            import pyarrow.fs

            return Checkpoint(path, filesystem=pyarrow.fs.FileSystem.from_uri(storage)[0])
        return Checkpoint(path)

    def log_summary(self, best: TrialRow) -> None:
        """The search's headline number, the best objective. (Per-language accuracies are the trial runs' metrics,
        which the per-language view shows side by side; a metric of the study run charts as a bar of its own.)"""
        metrics = [Metric("best_objective", best.objective, int(time.time() * 1000), 0)]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def log_verdict(self, verdict, steps=()) -> None:
        """The verdict on the study's run: the tag `verdict` (its line), the headline gain on the target average
        with its interval ends (`gain_avg_target`, `gain_avg_target_low`, `gain_avg_target_high`) and what the study
        could detect (`mde_avg_target`, `seeds_for_2pp`); `steps`, (name, value, step) triples, are logged at their
        steps (a shot-count sweep's, step = K)."""
        from study.verdict_report import metrics as verdict_metrics

        now = int(time.time() * 1000)
        self.client.set_tag(self.run_id, "verdict", verdict.line[:MAX_TAG_CHARS])
        metrics = [Metric(k, v, now, 0) for k, v in verdict_metrics(verdict).items()]
        metrics += [Metric(k, v, now, step) for k, v, step in steps]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def describe(self, report, rows: list[TrialRow], best: TrialRow | None) -> None:
        """The description the study run opens with, once the study ended: the verdict (`report`, the report's
        `WrittenReport`), the best trial and the references with links to their runs, per-language accuracy."""
        links = search_run_links(
            find_runs(self.client, self.experiment_id, mpt_study__run_type="trial", mpt_study__phase="search"),
            self.experiment_id,
        )
        settings = self.settings
        text = final_description(
            settings.name,
            self._params(),
            report.verdict_line,
            report.verdict,
            rows,
            best,
            links,
            self.experiment_id,
            settings.base_config.languages,
        )
        self.client.set_tag(self.run_id, DESCRIPTION_TAG, text[:MAX_TAG_CHARS])

    def links(self) -> dict[str, str]:
        """Where the study is in the MLflow UI (its runs table, the per-language view), for optuna-dashboard; none
        for a store `python study/ui.py` does not serve."""
        base = ui_base_url(self.settings.mlflow_tracking_uri)
        if base is None:
            return {}
        return {
            "mlflow_experiment_url": experiment_url(base, self.experiment_id),
            "mlflow_per_language_view_url": f"{base}/{view_route(self.experiment_id)}",
        }

    def log_report(self, study_dir: Path) -> None:
        """The report, its plots and the study's JSON files, under the parent run's artifacts `report/`."""
        for file in sorted(study_dir.iterdir()):
            if file.suffix in REPORT_SUFFIXES:
                self.client.log_artifact(self.run_id, str(file), artifact_path=REPORT_ARTIFACT_DIR)

    def interrupted(self, phase: str) -> None:
        """Leave MLflow saying what happened: running trial runs and the parent run are KILLED."""
        for run in find_runs(self.client, self.experiment_id, mpt_study__run_type="trial"):
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status="KILLED")
        self.client.set_tag(self.run_id, "interrupted", f"during the {phase}")
        self.client.set_terminated(self.run_id, status="KILLED")

    def finish(self, succeeded: bool) -> None:
        """End the parent run: FINISHED, or FAILED when no trial completed."""
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")


def export_trained_prompt(checkpoint, directory: Path, training: dict, backbone_for) -> Path | None:
    """The selected epoch of a trial's Ray checkpoint as a trained-prompt directory
    (`mpt.api.export_trained_prompt`); None, with a warning, when the checkpoint is gone or damaged (the trial's
    results stand, its weights are lost). `backbone_for(config)` gives the backbone."""
    from mpt.api import CheckpointError
    from mpt.api import export_trained_prompt as export

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as local:
        try:
            return export(Path(local) / STATE_FILE, directory, training, backbone_for)
        except CheckpointError as err:  # deleted or damaged
            print(f"warning: no trained prompt written to {directory}: {err}", file=sys.stderr)
            return None
