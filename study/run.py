"""Run a hyperparameter study of MPT: Ray Tune trials, an Optuna search, MLflow records and a report.

`python study/run.py --help` shows the flags, examples and exit statuses (their text is study/cli.py's
USAGE). This module is the study's outline; its parts are study.cli (the command line), study.preflight
(the checks before anything is written), study.tuner (Ray and the trials), study.mlflow_parent_run (the
study's MLflow run) and study.report.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if __package__ in (None, ""):  # run as a script: `study` must import from this very checkout (study/checkout.py)
    runpy.run_path(str(Path(__file__).with_name("checkout.py")))["require_this_checkout"](__file__)

# Silence only what is harmless: Ray's notice that it will stop overriding CUDA_VISIBLE_DEVICES for
# zero-GPU trials in a future release (we ask for the future behaviour explicitly; CPU trials ignore it).
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
# CheckpointConfig(num_to_keep=1) makes Tune snapshot its state with every trial checkpoint, which we
# want (resume then matches the checkpoints); on local disk that costs milliseconds, so the
# "snapshotting may become a bottleneck" warning is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune saves its state (trials, searcher) at every step of its loop instead of every 10 s or more: a killed
# driver then never loses a trial that already trained, let alone finished. The state is a small JSON and
# the searcher's pickle, written locally (uploads to remote storage keep their own pace).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
# Tune's legacy output engine, whose reporter API shows the study's own console (study.console: trials named
# as in MLflow, the objective, the study's progress); Ray 2.60's default new engine ignores progress reporters.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from mpt.api import BackboneError  # noqa: E402
from mpt.config import ConfigError  # noqa: E402
from mpt.data import DataError  # noqa: E402
from search_spaces import UnknownSpaceError  # noqa: E402
from study import cli, preflight, tuner  # noqa: E402
from study.cli import StudyRequest  # noqa: E402
from study.environment import command  # noqa: E402
from study.errors import StudyError  # noqa: E402
from study.paths import StudyPaths, write_atomically  # noqa: E402
from study.results import TrialRow, best_row, rows_from_results, save_rows, trial_result  # noqa: E402
from study.settings import StudySettings  # noqa: E402
from study.uris import redact  # noqa: E402

if TYPE_CHECKING:  # imported by run_study once the input is known to be good (it imports MLflow)
    from study.mlflow_parent_run import StudyRun

EXIT_NO_RESULT, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
# the errors that mean bad input: a message and exit status 2, not a traceback
INPUT_ERRORS = (StudyError, UnknownSpaceError, ConfigError, DataError, BackboneError)


def run_study(request: StudyRequest) -> int:
    """The study: check the input, start Ray, run the search (and the confirmation), record and report."""
    settings, paths = checked_settings(request)
    data = tuner.load_study_data(settings)
    preflight.check_backbone(settings.base_config)
    if request.resume:
        preflight.check_checkpoints(paths.experiment_path())
    # heavy imports only once the input is known to be good: errors above come back in a second
    from study.mlflow_parent_run import StudyRun
    from study.optuna_storage import annotate_study, optuna_storage_url
    from study.report import write_report

    tuner.start_ray(request.resources.address)
    import ray

    preflight.check_shared_storage(settings.storage_path, ray.nodes())
    warning = preflight.check_trial_resources(
        request.resources.cpus_per_trial, request.resources.gpus_per_trial, ray.nodes(), request.resources.address
    )
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if request.resources.address:  # a cluster's nodes need not have what this machine has
        preflight.check_nodes_run_trials(ray.nodes())
    record = StudyRun(settings)  # connects to the MLflow store (a SQLite one is created now)
    if not request.resume:
        write_atomically(paths.settings_file, settings.to_json())
    record.start(paths.results_root)
    started = time.perf_counter()
    grid, finished = tuner.run_search(
        settings,
        paths,
        request.resources,
        tuner.make_trainable(settings, request.resources, data, "search"),
        record.tracker("search"),
        request.resume,
    )
    rows = rows_from_results(grid, finished)
    save_rows(paths.trials_file, rows)
    record.retire_lost_trials(rows)
    if not finished:
        return interrupted(record, settings, rows, "search")

    best = best_row(rows)
    if best is not None:
        record.log_best(best, trial_result(grid, best.trial_id), paths.study_dir, register_as=request.register_model)
    if settings.confirm_top and best is not None:
        confirm_rows, confirmed = tuner.run_confirmation(
            settings,
            paths,
            request.resources,
            rows,
            tuner.make_trainable(settings, request.resources, data, "confirm"),
            record.tracker,
            request.resume,
        )
        if not confirmed:
            return interrupted(record, settings, rows, "confirmation")
        record.export_confirmation_models(confirm_rows, paths.study_dir)

    report = write_report(paths)
    if report.verdict is not None:
        record.log_verdict(report.verdict, report.metric_steps)
    record.log_report(paths.study_dir)
    record.describe(report, rows, best)  # what the study run's page opens with
    annotate_study(
        optuna_storage_url(settings.optuna_storage, paths.study_dir), settings.name, report.verdict_line, record.links()
    )  # what optuna-dashboard shows of the study
    return finish(record, settings, paths, report.summary, started, succeeded=best is not None)


def checked_settings(request: StudyRequest) -> tuple[StudySettings, StudyPaths]:
    """The settings the study runs with (a resumed study's stored ones) and its paths, once the checks that
    need no trial data pass. Nothing is written."""
    requested = request.settings
    paths = StudyPaths(requested.name, request.results_root, requested.storage_path)
    if request.resume:
        settings = preflight.stored_settings(requested.name, paths)
        request.refuse_changes(settings)
        preflight.check_resumable(settings, paths)
        paths = replace(paths, storage_path=settings.storage_path)
        preflight.check_storage(settings.storage_path)
        preflight.check_tracking_uri(settings.mlflow_tracking_uri)
        preflight.check_optuna_storage(settings.optuna_storage)
    else:
        # before check_new_study, which reads the storage and the MLflow store
        preflight.check_storage(requested.storage_path)
        preflight.check_tracking_uri(requested.mlflow_tracking_uri)
        preflight.check_optuna_storage(requested.optuna_storage)
        preflight.check_new_study(requested, paths)
        settings = requested
    preflight.check_tracking_for_address(request.resources.address, settings.mlflow_tracking_uri)
    preflight.check_ray_address(request.resources.address)
    return settings, paths


def finish(
    record: StudyRun, settings: StudySettings, paths: StudyPaths, summary: str, started: float, succeeded: bool
) -> int:
    """End the study's MLflow run, show the report's summary (the verdict last), and say whether any trial
    completed."""
    record.finish(succeeded)
    uri = redact(settings.mlflow_tracking_uri)
    browse = f"open {uri}" if uri.startswith(("http://", "https://")) else f"{command('ui')} {settings.name}"
    print(f"\nfinished in {time.perf_counter() - started:.0f} s; MLflow: {browse}")
    print(f"\n{summary}")
    if not succeeded:
        print(
            f"error: no trial of study {settings.name} completed; the reasons are in {paths.report_file} and "
            f"in the trials' MLflow runs (tag 'error')",
            file=sys.stderr,
        )
        return EXIT_NO_RESULT
    return 0


def interrupted(record: StudyRun, settings: StudySettings, rows: list[TrialRow], phase: str) -> int:
    """Leave MLflow saying what happened, and tell the user how to continue."""
    record.interrupted(phase)
    done = sum(r.status != "UNFINISHED" for r in rows)
    print(
        f"\nstudy {settings.name} interrupted during the {phase} ({done} of {settings.num_samples} search trials "
        f"ended); continue it with:\n  {command('study')} --space {settings.space} --name {settings.name} "
        f"--resume",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune prints the trials; Optuna's lines repeat them
    try:
        return run_study(cli.request_from_args(args))
    except INPUT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "\ninterrupted before the study started its trials: nothing to resume beyond what was saved",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
