"""The study's own MLflow run: one object keeps the parent run of a study from its start to its end.

`StudyRun` creates the study's experiment and parent run (its settings as params, the environment as tags)
or finds them again when the study resumes, hands out the Tune callback that records the trials
(`study.tracking.StudyTracker`), retires runs of trials a killed driver lost, logs the best trial's
weights and the headline metrics, logs the report, and ends the run as finished, failed or interrupted.
Like the rest of the MLflow records it is written by the driver only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from study.results import TrialRow
from study.settings import StudySettings, redacted
from study.tracking import (REPORT_ARTIFACT_DIR, StudyTracker, environment_tags, find_runs, find_study_run,
                            get_or_create_experiment, start_study_run)
from trainable import STATE_FILE

REPORT_SUFFIXES = (".md", ".html", ".png", ".json")  # the study folder's files the parent run keeps


class StudyRun:
    """The parent MLflow run of one study, in the study's experiment."""

    def __init__(self, settings: StudySettings) -> None:
        self.settings = settings
        self.client = MlflowClient(settings.mlflow_tracking_uri)  # a SQLite store's database is created here
        self.experiment_id = ""
        self.run_id = ""

    def start(self, results_root: Path, repo_root: Path) -> None:
        """Create the experiment and the parent run; a resumed study finds them again and runs on."""
        settings = self.settings
        artifacts = None
        if settings.mlflow_tracking_uri.startswith("sqlite:"):  # keep artifacts with the database, not in ./mlruns
            artifacts = (results_root / "mlartifacts" / settings.name).as_uri()
        self.experiment_id = get_or_create_experiment(self.client, settings.name, artifacts)
        run_id = find_study_run(self.client, self.experiment_id)
        if run_id is None:
            run_id = start_study_run(self.client, self.experiment_id, settings.name, self._params(),
                                     self._tags(repo_root))
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def _params(self) -> dict:
        settings = self.settings
        search_settings = {"space": settings.space, "objective": settings.objective,
                           "num_samples": settings.num_samples, "scheduler": settings.scheduler,
                           "seed": settings.seed, "smoke": settings.smoke, "sampler": "TPE(multivariate)",
                           "storage_path": settings.storage_path}
        # no credentials in MLflow: a URI with a token (storage, data, hub repo) is logged without it
        return redacted({**search_settings, **{f"base.{k}": v for k, v in settings.base_config.items()}})

    def _tags(self, repo_root: Path) -> dict:
        config = self.settings.config
        return redacted({**environment_tags(repo_root), "backbone": config.backbone, "data": config.data,
                         "languages": ",".join(config.languages)})

    def tracker(self, phase: str) -> StudyTracker:
        """The Tune callback that records the trials of one phase ("search" or "confirm") under this run."""
        settings = self.settings
        return StudyTracker(settings.mlflow_tracking_uri, settings.name, settings.space,
                            redacted(settings.trial_base_config()),
                            phase)

    def retire_lost_trials(self, rows: list[TrialRow]) -> None:
        """Delete the MLflow runs of search trials the study no longer has, so each trial keeps exactly one run.

        Tune saves its state every few seconds: a driver killed between starting a trial and the next save
        leaves an MLflow run for a trial the resumed study does not know (the searcher state is from the same
        save, so the study runs that point again, under a new trial id). The run is marked KILLED and deleted
        (MLflow keeps deleted runs restorable)."""
        client = self.client
        known = {row.trial_id for row in rows}
        for run in find_runs(client, self.experiment_id, mpt_study__role="trial", mpt_study__phase="search"):
            if run.data.tags.get("ray.trial_id") not in known:
                client.set_tag(run.info.run_id, "lost", "its trial was lost with a killed driver and ran again as "
                                                        "a new trial")
                client.set_terminated(run.info.run_id, status="KILLED")
                client.delete_run(run.info.run_id)

    def log_best(self, best: TrialRow, vanilla: TrialRow | None, result, study_dir: Path) -> None:
        """Tag the best trial's run and export its weights into it (from `result`, its Tune result, if any);
        then the headline numbers."""
        best_runs = find_runs(self.client, self.experiment_id, ray__trial_id=best.trial_id)
        if best_runs and result is not None:
            export_best_weights(self.client, best_runs[0].info.run_id, result.checkpoint, study_dir)
            self.client.set_tag(best_runs[0].info.run_id, "best_trial", "true")
        self.client.set_tag(self.run_id, "best_trial_number", str(best.trial_number))
        self.log_summary(best, vanilla)

    def log_summary(self, best: TrialRow, vanilla: TrialRow | None) -> None:
        """The parent run's headline numbers: best and vanilla test accuracy per language and the gain."""
        now = int(time.time() * 1000)
        metrics = [Metric("best_objective", best.objective, now, 0)]
        for lang, acc in best.test_accuracy.items():
            metrics.append(Metric(f"best_test_acc_{lang}", acc, now, 0))
            if vanilla is not None and lang in vanilla.test_accuracy:
                metrics.append(Metric(f"vanilla_test_acc_{lang}", vanilla.test_accuracy[lang], now, 0))
                metrics.append(Metric(f"gain_{lang}", acc - vanilla.test_accuracy[lang], now, 0))
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def log_report(self, study_dir: Path) -> None:
        """The report, its plots and the study's JSON files, under the parent run's artifacts `report/`."""
        for file in sorted(study_dir.iterdir()):
            if file.suffix in REPORT_SUFFIXES:
                self.client.log_artifact(self.run_id, str(file), artifact_path=REPORT_ARTIFACT_DIR)

    def interrupted(self, phase: str) -> None:
        """Leave MLflow saying what happened: running trial runs and the parent run are KILLED."""
        for run in find_runs(self.client, self.experiment_id, mpt_study__role="trial"):
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status="KILLED")
        self.client.set_tag(self.run_id, "interrupted", f"during the {phase}")
        self.client.set_terminated(self.run_id, status="KILLED")

    def finish(self, succeeded: bool) -> None:
        """End the parent run: FINISHED, or FAILED when no trial completed."""
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")


def export_best_weights(client, run_id: str, checkpoint, study_dir: Path) -> Path | None:
    """The best trial's prompt, translator (and linear head) weights, as safetensors, into its MLflow run."""
    import torch
    from safetensors.torch import save_file

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state_file = Path(directory) / STATE_FILE
        if not state_file.exists():  # deleted as damaged: the trial's results stand, its weights are gone
            print(f"warning: the best trial's checkpoint {directory} has no {STATE_FILE}: no best weights exported",
                  file=sys.stderr)
            return None
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    tensors = {k: v.contiguous() for k, v in state["best_state"].items()
               if k.startswith(("prompt.", "translator.", "head."))}
    path = study_dir / "best_weights.safetensors"
    save_file(tensors, str(path), metadata={"epoch": str(state["best_epoch"]), "config": state["config"]})
    client.log_artifact(run_id, str(path), artifact_path="best_weights")
    return path
